from django.urls import path

from . import views

app_name = "maintenance"

urlpatterns = [
    path("", views.EvacuationListView.as_view(), name="evacuation_list"),
    path("hosts/<int:host_id>/enter/", views.PlanView.as_view(), name="plan"),
    path("hosts/<int:host_id>/exit/", views.ExitView.as_view(), name="exit"),
    path("<int:pk>/", views.EvacuationDetailView.as_view(), name="evacuation_detail"),
    path("<int:pk>/partials/body/", views.EvacuationBodyPartialView.as_view(), name="evacuation_body"),
    path("<int:pk>/<str:action>/", views.EvacuationActionView.as_view(), name="evacuation_action"),
]
