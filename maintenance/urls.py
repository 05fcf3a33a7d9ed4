from django.urls import path

from . import views

app_name = "maintenance"

urlpatterns = [
    path("<int:pk>/", views.EvacuationDetailView.as_view(), name="evacuation_detail"),
]
