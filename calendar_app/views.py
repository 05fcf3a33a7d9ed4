"""Calendar pages: the month/week/list calendar and its JSON, a window's page, the create form,
the drag-to-move endpoint, cancel, and the iCal feed (with its tokens) and per-window .ics.

Views read, validate and call services (services.py); the calendar's drag posts JSON to the
same service and validation as the form.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views import View

from core.actors import Actor
from core.errors import ServiceRefused
from core.choices import RoleChoices
from core.middleware import CONTENT_SECURITY_POLICY
from core.roles import OperatorRequiredMixin, ViewerRequiredMixin, user_has_role
from hosts.permissions import HostAccessMixin, hosts_for, records_for

from . import feed, payloads, services
from .choices import OCCURRENCE_TERMINAL_STATES
from .forms import WindowForm, ZoneForm
from .middleware import SESSION_KEY
from .models import CalendarFeedToken, MaintenanceWindow
from .timeinput import TimeInputError, parse_time

MAX_RANGE = timedelta(days=400)
MAX_BODY = 4096


def _nonce_page(request, template: str, context: dict) -> HttpResponse:
    """A page using FullCalendar, which injects its stylesheet: allowed by a per-response style nonce."""
    nonce = secrets.token_urlsafe(16)
    response = render(request, template, {**context, "style_nonce": nonce})
    # Its navigation arrows are an icon font embedded as a data: URL.
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.replace(
        "style-src 'self'", f"style-src 'self' 'nonce-{nonce}'") + "; font-src 'self' data:"
    return response


def _zone_name() -> str:
    """The zone of this request: the person's own (calendar_app.middleware), else the portal's."""
    return timezone.get_current_timezone_name()


def _wall(text: str) -> datetime:
    """A time the calendar sent: wall-clock in this request's zone (an offset, if given, wins)."""
    return parse_time(text.removesuffix("Z") if text.endswith("Z") else text, _zone_name())


def _windows(user):
    """The windows whose every host the user may see."""
    return records_for(user, RoleChoices.VIEWER, MaintenanceWindow.objects.all())


class CalendarView(ViewerRequiredMixin, View):
    def get(self, request):
        hosts = hosts_for(request.user, RoleChoices.VIEWER).order_by("name")
        return _nonce_page(request, "calendar_app/calendar.html", {
            "hosts": hosts, "legend": payloads.legend(), "zone": _zone_name(),
            "now_wall": timezone.localtime().replace(tzinfo=None, microsecond=0).isoformat(),
            "zone_form": ZoneForm(initial={"zone": _zone_name()}),
            "windows": _windows(request.user).filter(cancelled=False, end__gte=timezone.now() - timedelta(days=1))
            .prefetch_related("hosts")[:50],
        })


def _range(request) -> tuple[datetime, datetime]:
    try:
        after, before = _wall(request.GET.get("start", "")), _wall(request.GET.get("end", ""))
    except TimeInputError:
        now = timezone.now()
        return now - timedelta(days=7), now + timedelta(days=42)
    if before <= after or before - after > MAX_RANGE:
        before = after + timedelta(days=42)
    return after, before


class EventsView(ViewerRequiredMixin, View):
    """FullCalendar's event source: every occurrence in the asked range, coloured by status."""

    def get(self, request):
        after, before = _range(request)
        windows = payloads.with_occurrences(_windows(request.user).filter(start__lt=before), after, before)
        host = request.GET.get("host", "")
        if host.isdigit():
            windows = windows.filter(hosts__pk=int(host))
        events = []
        zone = timezone.get_current_timezone()
        for w in windows.distinct():
            events += [payloads.calendar_event(o, zone) for o in payloads.occurrences_between(w, after, before)]
        return JsonResponse(events, safe=False)


class WindowDetailView(ViewerRequiredMixin, HostAccessMixin, View):
    access_model = MaintenanceWindow  # Viewer on every host of the window

    def get(self, request, pk):
        window = get_object_or_404(MaintenanceWindow.objects.prefetch_related("hosts"), pk=pk)
        now = timezone.now()
        occurrences = list(window.occurrences.prefetch_related("runs__host", "runs__evacuation", "runs__return_run")
                           .order_by("-start")[:50])
        upcoming = [o for o in payloads.occurrences_between(window, now, now + timedelta(days=120), limit=6)
                    if o["status"] not in OCCURRENCE_TERMINAL_STATES][:5]
        # The window's audit panel also shows what its evacuations and returns went through.
        runs = [run for occ in occurrences for run in occ.runs.all()]
        audit_children = [e for run in runs for e in (run.evacuation, run.return_run) if e is not None]
        return render(request, "calendar_app/window_detail.html", {
            "window": window, "occurrences": occurrences, "upcoming": upcoming, "audit_children": audit_children})


class WindowCreateView(OperatorRequiredMixin, HostAccessMixin, View):
    host_role = RoleChoices.OPERATOR  # on every host of the window (the form's hosts)

    def _form(self, *args, **kwargs) -> WindowForm:
        return WindowForm(*args, hosts=hosts_for(self.request.user, RoleChoices.OPERATOR), **kwargs)

    def get(self, request):
        initial = {}
        day = request.GET.get("date", "")[:10]
        try:
            d = datetime.fromisoformat(day).date() if day else None
        except ValueError:
            d = None
        if d:
            initial = {"start": f"{d.isoformat()}T02:00", "end": f"{d.isoformat()}T04:00"}
        host = request.GET.get("host", "")
        if host.isdigit():
            initial["hosts"] = hosts_for(request.user, RoleChoices.OPERATOR).filter(pk=int(host[:19]))
        initial["zone"] = _zone_name()
        return render(request, "calendar_app/window_form.html", {"form": self._form(initial=initial)})

    def post(self, request):
        self.require_posted_hosts(RoleChoices.OPERATOR, "hosts")
        form = self._form(request.POST)
        if form.is_valid():
            try:
                window = services.window_create(spec=form.spec(), actor=Actor.from_request(request),
                                                confirm_at_risk=form.cleaned_data.get("confirm_at_risk", False))
            except ServiceRefused as exc:
                form.add_problems(getattr(exc, "problems", None) or {None: [exc.message]})
            else:
                messages.success(request, f"Window {window.title!r} created.")
                return redirect(window)
        return render(request, "calendar_app/window_form.html", {"form": form}, status=400)


class WindowMoveView(OperatorRequiredMixin, HostAccessMixin, View):
    """The calendar's drag and resize: JSON {"start": iso, "end": iso} → the window's new times."""

    access_model = MaintenanceWindow
    host_role = RoleChoices.OPERATOR

    def post(self, request, pk):
        window = get_object_or_404(MaintenanceWindow.objects.prefetch_related("hosts"), pk=pk)
        if len(request.body) > MAX_BODY:
            return JsonResponse({"ok": False, "errors": ["The request is too large."]}, status=400)
        try:
            body = json.loads(request.body or b"{}")
            start, end = _wall(str(body["start"])), _wall(str(body["end"]))
        except (ValueError, KeyError, TypeError, TimeInputError) as exc:
            return JsonResponse({"ok": False, "errors": [f"Send the new start and end as ISO times ({exc})."]},
                                status=400)
        spec = services.WindowSpec(
            title=window.title, hosts=list(window.hosts.all()), start=start, end=end, zone=window.zone,
            rrule=window.rrule, exdates=window.exdates, cutoff_minutes=window.cutoff_minutes,
            on_start=window.on_start, on_end=window.on_end, notes=window.notes)
        try:
            window = services.window_update(window=window, spec=spec, actor=Actor.from_request(request),
                                            confirm_at_risk=window.accepted_at_risk)
        except ServiceRefused as exc:
            problems = getattr(exc, "problems", None)
            lines = [m for ms in problems.values() for m in ms] if problems else [exc.message]
            return JsonResponse({"ok": False, "errors": lines}, status=409)
        return JsonResponse({"ok": True, "window": payloads.window_dict(window),
                             "when": payloads.when_label(window.start, window.end)})


class WindowCancelView(OperatorRequiredMixin, HostAccessMixin, View):
    access_model = MaintenanceWindow
    host_role = RoleChoices.OPERATOR

    def post(self, request, pk):
        window = get_object_or_404(MaintenanceWindow, pk=pk)
        try:
            services.window_cancel(window=window, actor=Actor.from_request(request))
            messages.success(request, f"Window {window.title!r} cancelled.")
        except ServiceRefused as exc:
            messages.error(request, exc.message)
        return redirect(window)


def _ics(windows, request, filename: str) -> HttpResponse:
    base = request.build_absolute_uri("/")[:-1]
    response = HttpResponse(feed.calendar_ics(windows, base_url=base), content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, max-age=300"
    return response


class WindowIcsView(ViewerRequiredMixin, HostAccessMixin, View):
    access_model = MaintenanceWindow

    def get(self, request, pk):
        window = get_object_or_404(MaintenanceWindow.objects.prefetch_related("hosts"), pk=pk)
        return _ics([window], request, f"maintenance-window-{window.pk}.ics")


class FeedView(View):
    """The subscribed feed: no session, a user's token in the query (any active role may read)."""

    def get(self, request):
        user = services.feed_token_user(request.GET.get("token", ""))
        if user is None:
            return HttpResponseForbidden("Unknown or revoked calendar token.", content_type="text/plain")
        if not user_has_role(user, RoleChoices.VIEWER):
            return HttpResponseForbidden("This user may not read the calendar.", content_type="text/plain")
        windows = _windows(user).prefetch_related("hosts").order_by("start", "pk")
        return _ics(windows, request, "vmportal-maintenance.ics")


class FeedTokenView(ViewerRequiredMixin, View):
    """Your feed tokens: make one (shown once), revoke one."""

    def get(self, request, token: str | None = None):
        tokens = CalendarFeedToken.objects.filter(user=request.user)
        return render(request, "calendar_app/feed_tokens.html", {"tokens": tokens, "new_token": token,
                                                                  "feed_url": request.build_absolute_uri(
                                                                      "/maintenance/calendar.ics")})

    def post(self, request):
        actor = Actor.from_request(request)
        revoke = request.POST.get("revoke", "")
        if revoke.isdigit():
            row = CalendarFeedToken.objects.filter(pk=int(revoke), user=request.user).first()
            if row is None:
                raise Http404
            services.feed_token_revoke(token=row, actor=actor)
            messages.success(request, "Token revoked: calendars using it no longer get the feed.")
            return redirect("calendar_app:feed_tokens")
        token = services.feed_token_create(actor=actor)
        return self.get(request, token=token)


class ZoneView(ViewerRequiredMixin, View):
    """Choose the zone you see and enter times in."""

    def post(self, request):
        form = ZoneForm(request.POST)
        if form.is_valid():
            try:
                zone = services.user_zone_set(actor=Actor.from_request(request), zone=form.cleaned_data["zone"])
            except ServiceRefused as exc:
                messages.error(request, exc.message)
            else:
                request.session[SESSION_KEY] = zone
                messages.success(request, f"Times are shown in {zone}.")
        else:
            messages.error(request, " ".join(m for ms in form.errors.values() for m in ms))
        return redirect("calendar_app:calendar")
