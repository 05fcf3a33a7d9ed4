from django.urls import path

from . import capacity_views, group_views, lifecycle_views, views

app_name = "hosts"

urlpatterns = [
    path("", views.InventoryView.as_view(), name="inventory"),
    path("partials/inventory/", views.InventoryTablesPartialView.as_view(), name="inventory_tables"),
    path("add/", views.HostAddView.as_view(), name="host_add"),
    path("groups/", group_views.HostGroupListView.as_view(), name="host_groups"),
    path("portal-key/", views.PortalKeyView.as_view(), name="portal_key"),
    path("<id:pk>/", views.HostDetailView.as_view(), name="host_detail"),
    path("<id:pk>/partials/body/", views.HostDetailPartialView.as_view(), name="host_detail_body"),
    path("<id:pk>/load.json", views.HostLoadJsonView.as_view(), name="host_load"),
    path("<id:pk>/capacity/", capacity_views.HostCapacityView.as_view(), name="host_capacity"),
    path("load/sparklines.json", capacity_views.SparklinesJsonView.as_view(), name="sparklines"),
    path("<id:pk>/trust/", views.HostTrustView.as_view(), name="host_trust"),
    path("<id:pk>/fetch-key/", views.HostKeyFetchView.as_view(), name="host_fetch_key"),
    path("<id:pk>/refresh/", views.HostRefreshView.as_view(), name="host_refresh"),
    path("<id:pk>/edit/", lifecycle_views.HostEditView.as_view(), name="host_edit"),
    path("<id:pk>/changes/<id:change_pk>/", lifecycle_views.HostChangeView.as_view(), name="host_change"),
    path("<id:pk>/changes/<id:change_pk>/partials/body/", lifecycle_views.HostChangePartialView.as_view(),
         name="host_change_body"),
    path("<id:pk>/decommission/", lifecycle_views.HostDecommissionView.as_view(), name="host_decommission"),
    path("<id:pk>/recommission/", lifecycle_views.HostRecommissionView.as_view(), name="host_recommission"),
    path("<id:pk>/remove/", lifecycle_views.HostRemoveView.as_view(), name="host_remove"),
    path("<id:pk>/maintenance/", views.HostMaintenanceView.as_view(), name="host_maintenance"),
    path("<id:host_pk>/vms/<uuid:vm_uuid>/", views.VMDetailView.as_view(), name="vm_detail"),
    path("<id:host_pk>/vms/<uuid:vm_uuid>/partials/body/", views.VMDetailPartialView.as_view(), name="vm_detail_body"),
    path("<id:host_pk>/vms/<uuid:vm_uuid>/<str:action>/", views.VMActionView.as_view(), name="vm_action"),
]
