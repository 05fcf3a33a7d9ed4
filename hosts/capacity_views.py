"""A host's guest capacity (memory budget, vCPU ratio): the Admin's form, and the sparklines' data for lists."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views import View
from django.views.generic import FormView

from core.actors import Actor
from core.choices import RoleChoices
from core.errors import ServiceRefused
from core.roles import AdminRequiredMixin, ViewerRequiredMixin

from . import capacity, capacity_services, load
from .models import Host, HostLoad
from .permissions import HostAccessMixin, hosts_for

SPARKLINE_HOSTS_MAX = 200
SPARKLINE_SPAN = load.RANGES["day"]


class HostCapacityForm(forms.Form):
    memory_mib = forms.IntegerField(
        required=False, min_value=capacity.MEMORY_MIB_MIN, max_value=capacity.MEMORY_MIB_MAX,
        label="Memory for guests (MiB)", help_text="Empty: the host's memory minus the portal's reserve.")
    vcpu_ratio = forms.FloatField(
        required=False, min_value=capacity.RATIO_MIN, max_value=capacity.RATIO_MAX,
        label="vCPUs per host CPU", help_text="Empty: the portal's default overcommit ratio.")


class HostCapacityView(AdminRequiredMixin, HostAccessMixin, FormView):
    host_role = RoleChoices.ADMIN
    template_name = "hosts/host_capacity.html"
    form_class = HostCapacityForm

    def dispatch(self, request, *args, **kwargs):
        self.host = get_object_or_404(Host.objects.select_related("facts"), pk=kwargs["pk"])
        return super().dispatch(request, *args, **kwargs)

    def get_initial(self):
        row = getattr(self.host, "budget", None)
        return {"memory_mib": row.guest_memory_mib if row else None, "vcpu_ratio": row.vcpu_ratio if row else None}

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "host": self.host, "budget": capacity.host_budget(self.host)}

    def form_valid(self, form):
        try:
            capacity_services.host_capacity_set(host=self.host, memory_mib=form.cleaned_data["memory_mib"],
                                                vcpu_ratio=form.cleaned_data["vcpu_ratio"],
                                                actor=Actor.from_request(self.request))
        except ServiceRefused as refused:
            form.add_error(None, f"{refused.message} {refused.hint}")
            return self.form_invalid(form)
        messages.success(self.request, f"Saved the guest capacity of {self.host.name}.")
        return redirect("hosts:host_detail", pk=self.host.pk)


def _ids(text: str) -> list[int] | None:
    parts = [p for p in (text or "").split(",") if p]
    if len(parts) > SPARKLINE_HOSTS_MAX or not all(p.isdigit() and len(p) <= 19 for p in parts):
        return None
    return [int(p) for p in parts]


class SparklinesJsonView(ViewerRequiredMixin, View):
    """The last day of memory and CPU use of several hosts at once (``?ids=1,2,3``), for the lists' sparklines.

    One request for a whole page of hosts; hosts the user may not view are left out.
    """

    def get(self, request):
        ids = _ids(request.GET.get("ids", ""))
        if ids is None:
            return JsonResponse({"error": f"ids must be up to {SPARKLINE_HOSTS_MAX} host ids separated by commas."},
                                status=400)
        span, step = SPARKLINE_SPAN
        now = timezone.now()
        hosts = {h.pk: h for h in hosts_for(request.user, RoleChoices.VIEWER, Host.objects.filter(pk__in=ids))}
        rows: dict[int, list] = {pk: [] for pk in hosts}
        for row in (HostLoad.objects.filter(host_id__in=hosts, step_s=step, at__gte=now - span).order_by("at")
                    .values_list("host_id", "at", "memory_used_kib", "memory_free_kib", "cpu_pct")):
            rows[row[0]].append(row[1:])
        return JsonResponse({"from": int((now - span).timestamp()), "to": int(now.timestamp()),
                             "hosts": {str(pk): {"name": hosts[pk].name, **load.chart_series(r)}
                                       for pk, r in rows.items()}})
