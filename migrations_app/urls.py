from django.urls import path

from . import history_views, views

app_name = "migrations_app"

urlpatterns = [
    path("", views.MigrationListView.as_view(), name="migration_list"),
    path("partials/rows/", views.MigrationListPartialView.as_view(), name="migration_rows"),
    path("history.json", history_views.MigrationHistoryJsonView.as_view(), name="migration_history"),
    path("new/<id:vm_pk>/", views.MigrationWizardView.as_view(), name="wizard"),
    path("plans/<id:pk>/", views.PlanView.as_view(), name="plan"),
    path("plans/<id:pk>/partials/candidates/", views.PlanCandidatesPartialView.as_view(), name="plan_candidates"),
    path("plans/<id:pk>/to/<id:host_pk>/", views.PlanDestinationView.as_view(), name="plan_destination"),
    path("plans/<id:pk>/to/<id:host_pk>/partials/grid/", views.PlanGridPartialView.as_view(), name="plan_grid"),
    path("plans/<id:pk>/to/<id:host_pk>/repair-permissions/", views.PlanRepairPermissionsView.as_view(),
         name="plan_repair_permissions"),
    path("cold/new/<id:vm_pk>/", views.ColdMigrationWizardView.as_view(), name="cold_new"),
    path("cold/partials/rows/", views.ColdMigrationRowsPartialView.as_view(), name="cold_rows"),
    path("cold/<id:pk>/", views.ColdMigrationDetailView.as_view(), name="cold_detail"),
    path("cold/<id:pk>/partials/status/", views.ColdMigrationPartialView.as_view(), name="cold_partial"),
    path("<id:pk>/", views.MigrationDetailView.as_view(), name="migration_detail"),
    path("<id:pk>/partials/<str:part>/", views.MigrationPartialView.as_view(), name="migration_part"),
    path("<id:pk>/<str:action>/", views.MigrationActionView.as_view(), name="migration_action"),
]
