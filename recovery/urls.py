from django.urls import path

from . import views

app_name = "recovery"

urlpatterns = [
    path("hosts/<id:pk>/", views.RecoveryPlanView.as_view(), name="plan"),
    path("<id:pk>/", views.RecoveryDetailView.as_view(), name="detail"),
    path("items/<id:pk>/remove-stale/", views.StaleCopyRemoveView.as_view(), name="stale_remove"),
]
