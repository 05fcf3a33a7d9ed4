from django.urls import path

from . import people_views, views

app_name = "core"

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("jobs/", views.JobListView.as_view(), name="job_list"),
    path("jobs/<id:pk>/", views.JobDetailView.as_view(), name="job_detail"),
    path("audit/", views.AuditListView.as_view(), name="audit"),
    path("audit/<id:pk>/", views.AuditEventDetailView.as_view(), name="audit_event"),
    path("audit/export.<str:fmt>", views.AuditExportView.as_view(), name="audit_export"),
    path("audit/chain/", views.AuditChainView.as_view(), name="audit_chain"),
    path("people/", people_views.PeopleListView.as_view(), name="people"),
    path("people/new/", people_views.UserCreateView.as_view(), name="person_add"),
    path("people/<id:pk>/", people_views.PersonView.as_view(), name="person"),
    path("welcome/<str:token>/", people_views.InvitationAcceptView.as_view(), name="invitation_accept"),
    path("health/", views.HealthView.as_view(), name="health"),
    path("audit/partials/rows/", views.AuditRowsPartialView.as_view(), name="audit_rows"),
]
