"""Pages of a host's life: edit (with the check of a connection change), decommission, remove.

Thin views: a form, one service, a redirect. The checks that talk to the host run as jobs.
"""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect
from django.urls import NoReverseMatch, reverse
from django.views import View
from django.views.generic import FormView, TemplateView

from core.actors import Actor
from core.errors import ServiceRefused
from core.models import Job
from core.choices import RoleChoices
from core.roles import AdminRequiredMixin

from . import lifecycle, lifecycle_services
from .choices import VM_ACTIVE_STATES, HostChangeStatusChoices
from .forms import HostEditForm, HostTrustForm
from .models import Host, HostChange
from .permissions import HostAccessMixin


def _host(pk) -> Host:
    return get_object_or_404(Host.all_objects, pk=pk)


class HostEditView(AdminRequiredMixin, HostAccessMixin, FormView):
    host_role = RoleChoices.ADMIN

    template_name = "hosts/host_edit.html"
    form_class = HostEditForm

    def dispatch(self, request, *args, **kwargs):
        self.host = _host(kwargs["pk"])
        return super().dispatch(request, *args, **kwargs)

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "host": self.host}

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "host": self.host}

    def form_valid(self, form):
        data = form.cleaned_data
        try:
            requested = lifecycle_services.host_edit(
                host=self.host, connection=form.connection(), name=data["name"], notes=data["notes"],
                tags=data["tags"], actor=Actor.from_request(self.request),
            )
        except ServiceRefused as exc:
            form.add_error(None, f"{exc.message} {exc.hint}")
            return self.form_invalid(form)
        if requested is None:
            messages.success(self.request, f"Saved {data['name']}.")
            return redirect("hosts:host_detail", pk=self.host.pk)
        change, _job = requested
        messages.info(self.request, "Reading the host key at the new settings; nothing is saved until you confirm it.")
        return redirect(change.get_absolute_url())


def _shown(value) -> str:
    return ", ".join(value) if isinstance(value, list) else "" if value is None else str(value)


class HostChangeView(AdminRequiredMixin, HostAccessMixin, TemplateView):
    host_role = RoleChoices.ADMIN

    """A connection change: the fingerprint to confirm, then the check's outcome."""

    template_name = "hosts/host_change.html"

    def get_change(self) -> HostChange:
        return get_object_or_404(HostChange.objects.select_related("host"), pk=self.kwargs["change_pk"],
                                 host_id=self.kwargs["pk"])

    def get_context_data(self, **kwargs):
        change = self.get_change()
        host = change.host
        current = {**lifecycle_services.connection_of(host), **lifecycle_services.details_of(host)}
        proposed = {**{k: v for k, v in change.proposed.items() if k != "details"},
                    **change.proposed.get("details", {})}
        rows = [{"field": f.replace("_", " "), "old": _shown(current.get(f)), "new": _shown(v),
                 "changed": current.get(f) != v} for f, v in proposed.items()]
        if change.secret_encrypted or change.status == HostChangeStatusChoices.APPLIED:
            rows.append({"field": "key / password", "old": "stored", "new": "new one given" if change.secret_encrypted
                         else "", "changed": bool(change.secret_encrypted)})
        return {
            **super().get_context_data(**kwargs),
            "change": change, "host": host, "rows": rows,
            "awaiting": change.status == HostChangeStatusChoices.AWAITING_CONFIRMATION,
            "open": change.status in (HostChangeStatusChoices.READING_KEY, HostChangeStatusChoices.CHECKING,
                                      HostChangeStatusChoices.AWAITING_CONFIRMATION),
            "same_key": bool(change.presented_host_key) and change.presented_host_key == host.host_key,
            "form": HostTrustForm(initial={"fingerprint": change.presented_host_key_fingerprint}),
            "jobs": Job.objects.filter(target_type="host", target_id=str(host.pk),
                                       kind__startswith="host.change_").defer("log", "result")[:4],
        }

    def post(self, request, *args, **kwargs):
        change = self.get_change()
        actor = Actor.from_request(request)
        if request.POST.get("cancel"):
            lifecycle_services.host_change_cancel(change=change, actor=actor)
            messages.info(request, "Cancelled: the host keeps its settings.")
            return redirect("hosts:host_detail", pk=change.host_id)
        form = HostTrustForm(request.POST)
        if not form.is_valid():
            messages.error(request, "The confirmation was incomplete; compare the fingerprint and confirm again.")
            return redirect(change.get_absolute_url())
        try:
            lifecycle_services.host_change_confirm(change=change, fingerprint=form.cleaned_data["fingerprint"],
                                                   actor=actor)
        except ServiceRefused as exc:
            messages.error(request, f"{exc.message} {exc.hint}")
        return redirect(change.get_absolute_url())


class HostChangePartialView(HostChangeView):
    template_name = "hosts/partials/host_change_body.html"


def _maintenance_url(host: Host) -> str:
    # The maintenance app is built on this one: its page is found by name, at run time.
    try:
        return reverse("maintenance:plan", kwargs={"host_id": host.pk})
    except NoReverseMatch:
        return ""


class HostLifecycleView(AdminRequiredMixin, HostAccessMixin, TemplateView):
    host_role = RoleChoices.ADMIN

    """GET: what decommissioning / removing the host means, or why it is refused now. POST: do it."""

    template_name = "hosts/host_lifecycle_confirm.html"
    ACTIONS = {
        "decommission": lifecycle_services.host_decommission,
        "recommission": lifecycle_services.host_recommission,
        "remove": lifecycle_services.host_remove,
    }
    action = ""

    def refusal(self, host: Host):
        running = host.vms.filter(state__in=VM_ACTIVE_STATES).count()
        busy = lifecycle_services.busy_guests(host)
        if self.action == "decommission":
            return lifecycle.decommission_refusal(lifecycle=host.lifecycle, name=host.name,
                                                  running_guests=running, busy_guests=busy)
        if self.action == "remove":
            return lifecycle.remove_refusal(lifecycle=host.lifecycle, name=host.name,
                                            defined_guests=host.vms.count(), busy_guests=busy)
        return None

    def get_context_data(self, **kwargs):
        host = _host(self.kwargs["pk"])
        return {
            **super().get_context_data(**kwargs), "host": host, "action": self.action,
            "refusal": self.refusal(host), "maintenance_url": _maintenance_url(host),
            "running": host.vms.filter(state__in=VM_ACTIVE_STATES),
        }

    def post(self, request, *args, **kwargs):
        host = _host(kwargs["pk"])
        try:
            host = self.ACTIONS[self.action](host=host, actor=Actor.from_request(request))
        except ServiceRefused as exc:
            messages.error(request, f"{exc.message} {exc.hint}")
            return redirect(f"hosts:host_{self.action}", pk=host.pk)
        messages.success(request, f"{host.name}: {host.get_lifecycle_display().lower()}.")
        return redirect("hosts:host_detail", pk=host.pk)


class HostDecommissionView(HostLifecycleView):
    action = "decommission"


class HostRecommissionView(HostLifecycleView):
    action = "recommission"


class HostRemoveView(HostLifecycleView):
    action = "remove"
