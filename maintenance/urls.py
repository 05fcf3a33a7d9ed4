from django.urls import path

from . import views

app_name = "maintenance"

urlpatterns = [
    path("", views.EvacuationListView.as_view(), name="evacuation_list"),
    path("hosts/<id:host_id>/enter/", views.PlanView.as_view(), name="plan"),
    path("hosts/<id:host_id>/exit/", views.ExitView.as_view(), name="exit"),
    path("<id:pk>/", views.EvacuationDetailView.as_view(), name="evacuation_detail"),
    path("<id:pk>/partials/body/", views.EvacuationBodyPartialView.as_view(), name="evacuation_body"),
    path("<id:pk>/<str:action>/", views.EvacuationActionView.as_view(), name="evacuation_action"),
]
