from django.urls import path

from . import views

app_name = "fleet"

urlpatterns = [
    path("", views.FleetView.as_view(), name="fleet"),
    path("apply/", views.RecommendationApplyView.as_view(), name="apply"),
]
