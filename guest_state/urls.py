from django.urls import path

from . import views

app_name = "guest_state"

urlpatterns = [
    path("", views.SavedStateListView.as_view(), name="list"),
    path("<id:pk>/", views.SavedStateDetailView.as_view(), name="detail"),
    path("guests/<id:vm_pk>/save/", views.SavedStateSaveView.as_view(), name="save"),
    path("<id:pk>/restore/", views.SavedStateRestoreView.as_view(), name="restore"),
    path("<id:pk>/delete/", views.SavedStateDeleteView.as_view(), name="delete"),
    path("guests/<id:vm_pk>/managed-save/", views.ManagedSaveView.as_view(), name="managed_save"),
    path("guests/<id:vm_pk>/managed-save/remove/", views.ManagedSaveView.as_view(remove=True),
         name="managed_save_remove"),
    path("guests/<id:vm_pk>/snapshots/", views.SnapshotCreateView.as_view(), name="snapshot_create"),
    path("guests/<id:vm_pk>/snapshots/check/", views.SnapshotCheckView.as_view(), name="snapshot_check"),
    path("snapshots/<id:pk>/revert/", views.SnapshotActionView.as_view(revert=True), name="snapshot_revert"),
    path("snapshots/<id:pk>/delete/", views.SnapshotActionView.as_view(revert=False), name="snapshot_delete"),
]
