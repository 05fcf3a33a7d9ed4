from django.urls import path

from . import views

app_name = "guest_state"

urlpatterns = [
    path("", views.SavedStateListView.as_view(), name="list"),
    path("<id:pk>/", views.SavedStateDetailView.as_view(), name="detail"),
    path("<id:pk>/restore/", views.SavedStateRestoreView.as_view(), name="restore"),
]
