from django.urls import path

from . import views

app_name = "fleet"

urlpatterns = [
    path("", views.FleetView.as_view(), name="fleet"),
    path("apply/", views.RecommendationApplyView.as_view(), name="apply"),
    path("dismiss/", views.RecommendationDismissView.as_view(), name="dismiss"),
    path("settings/", views.FleetSettingsView.as_view(), name="settings"),
]
