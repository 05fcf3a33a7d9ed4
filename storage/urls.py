from django.urls import path

from . import views

app_name = "storage"

urlpatterns = [
    path("", views.ShareListView.as_view(), name="share_list"),
    path("new/", views.ShareCreateView.as_view(), name="share_create"),
    path("<int:pk>/", views.ShareDetailView.as_view(), name="share_detail"),
    path("<int:pk>/partials/body/", views.ShareDetailPartialView.as_view(), name="share_body"),
    path("<int:pk>/setups/<int:setup_pk>/", views.ShareDetailView.as_view(), name="setup_detail"),
    path("<int:pk>/setups/<int:setup_pk>/partials/body/", views.ShareDetailPartialView.as_view(), name="setup_body"),
    path("<int:pk>/setups/<int:setup_pk>/apply/", views.ShareApplyView.as_view(), name="setup_apply"),
    path("<int:pk>/plan/", views.SharePlanView.as_view(), name="share_plan"),
    path("<int:pk>/verify/", views.ShareVerifyView.as_view(), name="share_verify"),
]
