"""Recovery pages: the plan of a dead host (with the fencing confirmation), a recovery's page,
and removing a stale copy once the host is back. Admin only for every action."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.views import View
from django.views.generic import DetailView, TemplateView

from core.actors import Actor
from core.choices import RoleChoices
from core.errors import ServiceRefused
from core.ids import IdModelChoiceField
from core.roles import AdminRequiredMixin, ViewerRequiredMixin
from hosts.models import Host
from hosts.permissions import HostAccessMixin

from . import services
from .models import HostRecovery, RecoveryItem


def _destination_field(host: Host) -> IdModelChoiceField:
    return IdModelChoiceField(queryset=Host.objects.exclude(pk=host.pk), required=False)


class RecoveryPlanView(AdminRequiredMixin, HostAccessMixin, TemplateView):
    """GET: the plan (optionally for one destination); POST: confirm fencing and start it."""

    template_name = "recovery/plan.html"
    host_role = RoleChoices.ADMIN

    def _destination(self, host, raw):
        try:
            return _destination_field(host).clean(raw or None), ""
        except ValidationError:  # an unknown or malformed host id
            return None, "Choose a destination from the list (or let the placement choose)."

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        host = get_object_or_404(Host, pk=self.kwargs["pk"])
        destination, problem = self._destination(host, self.request.GET.get("destination"))
        context.update(host=host, destination=destination, problem=problem,
                       plan=services.plan_for(host, destination=destination),
                       statement=services.fencing_statement(host), destinations=Host.objects.exclude(pk=host.pk),
                       recoveries=HostRecovery.objects.filter(host=host)[:10])
        return context

    def post(self, request, pk):
        host = get_object_or_404(Host, pk=pk)
        destination, problem = self._destination(host, request.POST.get("destination"))
        if problem:
            messages.error(request, problem)
            return redirect("recovery:plan", host.pk)
        try:
            recovery = services.recovery_request(
                host=host, destination=destination, fencing_confirmed=request.POST.get("fenced") == "on",
                fingerprint=request.POST.get("fingerprint", "")[:64], actor=Actor.from_request(request))
        except ServiceRefused as refused:
            messages.error(request, f"{refused.message} {refused.hint}".strip())
            return redirect("recovery:plan", host.pk)
        messages.success(request, f"Recovery of {host.name}'s guests started: the portal first checks it is gone.")
        return redirect(recovery)


class RecoveryDetailView(ViewerRequiredMixin, HostAccessMixin, DetailView):
    template_name = "recovery/recovery_detail.html"
    context_object_name = "recovery"

    def url_host(self, kwargs):
        recovery = HostRecovery.objects.select_related("host").filter(pk=kwargs["pk"]).first()
        return recovery.host if recovery is not None else None

    def get_queryset(self):
        return HostRecovery.objects.select_related("host", "destination", "job")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["items"] = self.object.items.select_related("destination", "job")
        return context


class StaleCopyRemoveView(AdminRequiredMixin, HostAccessMixin, View):
    """Admin on the old host (where the copy is undefined)."""

    host_role = RoleChoices.ADMIN

    def url_host(self, kwargs):
        item = RecoveryItem.objects.select_related("recovery__host").filter(pk=kwargs["pk"]).first()
        return item.recovery.host if item is not None else None

    def post(self, request, pk):
        item = get_object_or_404(RecoveryItem.objects.select_related("recovery__host"), pk=pk)
        if request.POST.get("confirm") != "on":
            messages.error(request, "Tick the confirmation to remove the stale copy.")
            return redirect(item.recovery)
        try:
            services.stale_remove_request(item=item, actor=Actor.from_request(request))
        except ServiceRefused as refused:
            messages.error(request, f"{refused.message} {refused.hint}".strip())
        else:
            messages.success(request, f"Removal of the stale copy of {item.vm_name} on {item.recovery.host.name} queued.")
        return redirect(item.recovery)
