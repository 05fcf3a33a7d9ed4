from django.urls import path

from . import views

app_name = "storage"

urlpatterns = [
    path("", views.ShareListView.as_view(), name="share_list"),
    path("new/", views.ShareCreateView.as_view(), name="share_create"),
    path("<id:pk>/", views.ShareDetailView.as_view(), name="share_detail"),
    path("<id:pk>/partials/body/", views.ShareDetailPartialView.as_view(), name="share_body"),
    path("<id:pk>/setups/<id:setup_pk>/", views.ShareDetailView.as_view(), name="setup_detail"),
    path("<id:pk>/setups/<id:setup_pk>/partials/body/", views.ShareDetailPartialView.as_view(), name="setup_body"),
    path("<id:pk>/setups/<id:setup_pk>/apply/", views.ShareApplyView.as_view(), name="setup_apply"),
    path("<id:pk>/plan/", views.SharePlanView.as_view(), name="share_plan"),
    path("<id:pk>/verify/", views.ShareVerifyView.as_view(), name="share_verify"),
]
