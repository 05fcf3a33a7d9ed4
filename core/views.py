from django.contrib.auth import views as auth_views
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpResponseRedirect, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views import View
from django.views.generic import DetailView, TemplateView

from . import audit_pages
from .actors import Actor
from .audit_chain import head
from .health import portal_health
from .audit_export import FORMATS, aexport_lines, audit_export_start, export_lines
from .filtersets import filtered_events, filtered_jobs
from .keyset import keyset_page
from .audit_jobs import AUDIT_VERIFY_KIND, audit_verify_request
from .models import AuditCheckpoint, AuditEvent, Job
from .roles import AdminRequiredMixin, ViewerRequiredMixin, targets_visible

JOB_PAGE_SIZE = 100
# Events shown before and after one on its page.
AUDIT_AROUND = 5


class LoginView(auth_views.LoginView):
    template_name = "core/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    pass


class JobListView(ViewerRequiredMixin, TemplateView):
    """Filtered, keyset-paged jobs, newest first."""

    template_name = "core/job_list.html"

    def get_context_data(self, **kwargs):
        filterset, queryset = filtered_jobs(self.request.GET)
        queryset = targets_visible(self.request.user, queryset.select_related("created_by").defer("log", "result"))
        page = keyset_page(queryset, field="created", older=self.request.GET.get("older"),
                           newer=self.request.GET.get("newer"), size=JOB_PAGE_SIZE)
        return super().get_context_data(filter=filterset, page=page, jobs=page.rows,
                                        filter_query=urlencode(_filter_params(self.request)), **kwargs)


class JobDetailView(ViewerRequiredMixin, DetailView):
    model = Job
    template_name = "core/job_detail.html"
    context_object_name = "job"

    def get_object(self, queryset=None):
        job = super().get_object(queryset)
        if not targets_visible(self.request.user, Job.objects.filter(pk=job.pk)).exists():
            raise PermissionDenied("This job acts on hosts outside your host groups.")
        return job


def _filter_params(request) -> dict:
    """The query string's filters (not the page cursors), for links, exports and the audit trail."""
    return {k: v for k, v in request.GET.items() if k not in ("older", "newer", "after", "format") and v}


class AuditListView(ViewerRequiredMixin, TemplateView):
    """Filtered, keyset-paged audit events, newest first; the first page updates live."""

    template_name = "core/audit_list.html"

    def get_context_data(self, **kwargs):
        filterset, queryset = filtered_events(self.request.GET)
        queryset = targets_visible(self.request.user, queryset)
        page = audit_pages.audit_page(queryset, older=self.request.GET.get("older"),
                                      newer=self.request.GET.get("newer"))
        params = _filter_params(self.request)
        return super().get_context_data(filter=filterset, page=page, events=page.events,
                                        filter_query=urlencode(params), **kwargs)


class AuditRowsPartialView(ViewerRequiredMixin, TemplateView):
    """Rows newer than ``after`` (an event id) that match the page's filter, for live updates."""

    template_name = "core/partials/audit_rows.html"

    def get_context_data(self, **kwargs):
        _, queryset = filtered_events(self.request.GET)
        queryset = targets_visible(self.request.user, queryset)
        try:
            after = int(self.request.GET.get("after", ""))
        except ValueError:
            after = None
        events = []
        if after is not None:
            events = list(queryset.filter(pk__gt=after).select_related("job").order_by("-time", "-pk")
                          [: audit_pages.PAGE_SIZE])
        return super().get_context_data(events=events, live=True, **kwargs)


class AuditEventDetailView(ViewerRequiredMixin, DetailView):
    """One event: every field, its parameters and before/after values, the request or job that
    produced it, and the events just before and after it in time."""

    model = AuditEvent
    template_name = "core/audit_event.html"
    context_object_name = "event"

    def get_queryset(self):
        return targets_visible(self.request.user, AuditEvent.objects.all())

    def get_context_data(self, **kwargs):
        event = self.object
        ctx = super().get_context_data(**kwargs)
        visible = self.get_queryset()
        # Both newest first, as the list shows them: the later ones, this one, the earlier ones.
        before = list(visible.filter(audit_pages.older_q(event.time, event.pk))
                      .order_by("-time", "-pk")[:AUDIT_AROUND])
        after = list(visible.filter(audit_pages.newer_q(event.time, event.pk))
                     .order_by("time", "pk")[:AUDIT_AROUND])[::-1]
        changes = event.parameters.get("changes") if isinstance(event.parameters, dict) else None
        same_request = []
        if event.request_id:
            same_request = list(visible.filter(request_id=event.request_id).exclude(pk=event.pk)
                                .order_by("time", "pk")[:20])
        ctx.update(around_before=before, around_after=after, same_request=same_request,
                   changes=changes if isinstance(changes, dict) else None,
                   other_parameters={k: v for k, v in event.parameters.items() if k != "changes"}
                   if isinstance(event.parameters, dict) else {})
        return ctx


class AuditExportView(ViewerRequiredMixin, View):
    """The filter's rows as CSV or JSON Lines, streamed; the export itself is audited."""

    def get(self, request, fmt: str):
        if fmt not in FORMATS:
            raise Http404("Unknown export format.")
        filterset, queryset = filtered_events(request.GET)
        queryset = audit_export_start(queryset=targets_visible(request.user, queryset),
                                      filters=_filter_params(request), fmt=fmt, actor=Actor.from_request(request))
        lines = aexport_lines(queryset, fmt) if isinstance(request, ASGIRequest) else export_lines(queryset, fmt)
        content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson; charset=utf-8"
        response = StreamingHttpResponse(lines, content_type=content_type)
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
        return response


class AuditChainView(AdminRequiredMixin, TemplateView):
    """The chain's state: events, head, last checkpoint, last verification; "Verify now"."""

    template_name = "core/audit_chain.html"

    def get_context_data(self, **kwargs):
        head_id, head_hash = head()
        return super().get_context_data(
            events=AuditEvent.objects.count(), head_id=head_id, head_hash=head_hash,
            checkpoint=AuditCheckpoint.objects.order_by("-pk").first(),
            checkpoints=AuditCheckpoint.objects.count(),
            verify_job=Job.objects.filter(kind=AUDIT_VERIFY_KIND).order_by("-pk").first(),
            last_verified=Job.objects.filter(kind=AUDIT_VERIFY_KIND, status="succeeded").order_by("-pk").first(),
            **kwargs,
        )

    def post(self, request):
        job = audit_verify_request(actor=Actor.from_request(request))
        return HttpResponseRedirect(reverse("core:job_detail", args=[job.pk]))


class HealthView(ViewerRequiredMixin, TemplateView):
    """Portal health: read-only process state, no host detail, so every role may see it — a
    Viewer whose job does not move needs to see that the workers are down as much as an Admin."""

    template_name = "core/health.html"

    def get_context_data(self, **kwargs):
        return super().get_context_data(health=portal_health(), **kwargs)
