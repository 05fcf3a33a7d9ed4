from django.urls import path

from . import views

app_name = "hosts"

urlpatterns = [
    path("", views.InventoryView.as_view(), name="inventory"),
    path("partials/inventory/", views.InventoryTablesPartialView.as_view(), name="inventory_tables"),
    path("add/", views.HostAddView.as_view(), name="host_add"),
    path("portal-key/", views.PortalKeyView.as_view(), name="portal_key"),
    path("<id:pk>/", views.HostDetailView.as_view(), name="host_detail"),
    path("<id:pk>/partials/body/", views.HostDetailPartialView.as_view(), name="host_detail_body"),
    path("<id:pk>/load.json", views.HostLoadJsonView.as_view(), name="host_load"),
    path("<id:pk>/trust/", views.HostTrustView.as_view(), name="host_trust"),
    path("<id:pk>/fetch-key/", views.HostKeyFetchView.as_view(), name="host_fetch_key"),
    path("<id:pk>/refresh/", views.HostRefreshView.as_view(), name="host_refresh"),
    path("<id:pk>/maintenance/", views.HostMaintenanceView.as_view(), name="host_maintenance"),
    path("<id:host_pk>/vms/<uuid:vm_uuid>/", views.VMDetailView.as_view(), name="vm_detail"),
    path("<id:host_pk>/vms/<uuid:vm_uuid>/partials/body/", views.VMDetailPartialView.as_view(), name="vm_detail_body"),
    path("<id:host_pk>/vms/<uuid:vm_uuid>/<str:action>/", views.VMActionView.as_view(), name="vm_action"),
]
