from django.contrib.auth import views as auth_views
from django.views.generic import DetailView, ListView, TemplateView

from .health import portal_health
from .models import AuditEvent, Job
from .roles import ViewerRequiredMixin

AUDIT_PAGE_SIZE = 200
JOB_PAGE_SIZE = 100


class LoginView(auth_views.LoginView):
    template_name = "core/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    pass


class JobListView(ViewerRequiredMixin, ListView):
    template_name = "core/job_list.html"
    context_object_name = "jobs"

    def get_queryset(self):
        return Job.objects.select_related("created_by").defer("log", "result")[:JOB_PAGE_SIZE]


class JobDetailView(ViewerRequiredMixin, DetailView):
    model = Job
    template_name = "core/job_detail.html"
    context_object_name = "job"


class AuditListView(ViewerRequiredMixin, ListView):
    template_name = "core/audit_list.html"
    context_object_name = "events"

    def get_queryset(self):
        return AuditEvent.objects.all()[:AUDIT_PAGE_SIZE]


class AuditRowsPartialView(AuditListView):
    """The audit table body alone; the audit page re-fetches it on each live event."""

    template_name = "core/partials/audit_rows.html"


class HealthView(ViewerRequiredMixin, TemplateView):
    """Portal health: read-only process state, no host detail, so every role may see it — a
    Viewer whose job does not move needs to see that the workers are down as much as an Admin."""

    template_name = "core/health.html"

    def get_context_data(self, **kwargs):
        return super().get_context_data(health=portal_health(), **kwargs)
