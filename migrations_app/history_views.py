"""The migrations list's history charts: ``history.json?days=&host=&guest=`` (Viewer; only hosts the user may view)."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.http import JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views import View

from core.choices import RoleChoices
from core.roles import ViewerRequiredMixin
from hosts.models import Host
from hosts.permissions import hosts_for

from . import history
from .models import Migration

DAYS_MAX = 365
ROWS_MAX = 2000
GUEST_MAX = 255
_SENTINEL = 987654321  # reversed, then replaced by each point's id in the browser


def _bad(message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=400)


class MigrationHistoryJsonView(ViewerRequiredMixin, View):
    def get(self, request):
        days_text = request.GET.get("days", "30")
        if not days_text.isdigit() or not 1 <= int(days_text) <= DAYS_MAX:
            return _bad(f"days must be a whole number from 1 to {DAYS_MAX}.")
        host_text = request.GET.get("host", "")
        if host_text and not (host_text.isdigit() and len(host_text) <= 19):
            return _bad("host must be a host id.")
        guest = request.GET.get("guest", "").strip()
        if len(guest) > GUEST_MAX:
            return _bad(f"guest must be at most {GUEST_MAX} characters.")
        since = timezone.now() - timedelta(days=int(days_text))
        visible = hosts_for(request.user, RoleChoices.VIEWER, Host.all_objects.all()).values("pk")
        qs = Migration.objects.filter(created__gte=since).filter(Q(source__in=visible) | Q(destination__in=visible))
        if host_text:
            qs = qs.filter(Q(source_id=int(host_text)) | Q(destination_id=int(host_text)))
        if guest:
            qs = qs.filter(vm_name__icontains=guest)
        rows = [history.Row(*values) for values in qs.order_by("-created").values_list(
            "id", "created", "status", "vm_name", "source__name", "destination__name", "total_time_ms",
            "downtime_ms", "heartbeat_gap_s")[:ROWS_MAX]]
        data = history.series(rows)
        data["url"] = reverse("migrations_app:migration_detail", args=[_SENTINEL]).replace(f"/{_SENTINEL}/", "/{id}/")
        data["truncated"] = len(rows) == ROWS_MAX
        data["from"], data["to"] = int(since.timestamp()), int(timezone.now().timestamp())
        return JsonResponse(data)
