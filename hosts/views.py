"""Inventory pages. Views only read, validate and call services; no host I/O here."""

from django.contrib import messages
from django.db.models import Q
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.views import View
from django.views.generic import DetailView, FormView, TemplateView

from core.actors import Actor
from core.models import Job
from core.choices import RoleChoices
from core.roles import AdminRequiredMixin, OperatorRequiredMixin, ViewerRequiredMixin

from . import disk_sizes, load, services
from .choices import HostJobKindChoices, HostLifecycleChoices, VMActionChoices
from .forms import HostAddForm, HostTrustForm
from .inventory_page import duplicate_flags, inventory_context
from .leases import lease_holder
from .models import Host, PortalKey, VirtualMachine
from .permissions import HostAccessMixin, hosts_for
from .vm_actions import vm_actions_available

RECENT_JOBS = 10


def _facts_of(host: Host):
    return getattr(host, "facts", None)


def _recent_jobs(target_type: str, target_id) -> list[Job]:
    # created_by in the same query: the job table shows each job's user.
    return list(
        Job.objects.filter(target_type=target_type, target_id=str(target_id)).select_related("created_by")
        .defer("log", "result")[:RECENT_JOBS]
    )


def _identity_peers(host: Host, facts):
    """The host and the hosts in service whose facts share its hostname or host UUID: one
    query, whatever the fleet's size."""
    same = Q(pk__in=[])
    if facts is not None and facts.hostname.strip():
        same |= Q(facts__hostname__iexact=facts.hostname.strip())
    if facts is not None and facts.host_uuid.strip():
        same |= Q(facts__host_uuid__iexact=facts.host_uuid.strip())
    return Host.all_objects.filter(Q(pk=host.pk) | (Q(lifecycle=HostLifecycleChoices.ACTIVE) & same))


def inventory_hosts(request):
    """The inventory's hosts: in service by default, decommissioned ones too with ?show=all."""
    if request.GET.get("show") == "all":
        return Host.all_objects.not_removed()
    return Host.objects.all()


class InventoryView(ViewerRequiredMixin, TemplateView):
    """A page of hosts with their guests' summary and a page of guests, filtered and sorted by
    the query string (hosts/inventory_page.py)."""

    template_name = "hosts/inventory.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        hosts = hosts_for(self.request.user, RoleChoices.VIEWER, inventory_hosts(self.request))
        context.update(inventory_context(self.request.GET, hosts))
        context["show_all"] = self.request.GET.get("show") == "all"
        return context


class InventoryTablesPartialView(InventoryView):
    template_name = "hosts/partials/inventory_tables.html"


class HostDetailView(ViewerRequiredMixin, HostAccessMixin, DetailView):
    template_name = "hosts/host_detail.html"
    context_object_name = "host"

    def url_host(self, kwargs):
        return Host.all_objects.select_related("facts").filter(pk=kwargs["pk"]).first()

    def get_object(self, queryset=None):
        # The host HostAccessMixin read (with its facts) and checked: not read a second time.
        host = getattr(self, "access_host", None)
        if host is None:
            raise Http404("No such host.")
        return host

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        host = self.object
        facts = _facts_of(host)
        context["facts"] = facts
        context["duplicates"] = duplicate_flags(_identity_peers(host, facts)).get(host.pk)
        context["vms"] = host.vms.all()
        context["jobs"] = _recent_jobs("host", host.pk)
        context["portal_key"] = PortalKey.objects.order_by("pk").first()
        return context


class HostLoadJsonView(ViewerRequiredMixin, HostAccessMixin, View):
    """A host's memory and CPU history for its chart: ``?range=hour|day|week|quarter`` (default day)."""

    def get(self, request, pk):
        host = get_object_or_404(Host, pk=pk)
        name = request.GET.get("range", "day")
        if name not in load.RANGES:
            return JsonResponse({"error": f"range must be one of {', '.join(load.RANGES)}."}, status=400)
        span, step = load.RANGES[name]
        now = timezone.now()
        rows = (host.load_points.filter(step_s=step, at__gte=now - span).order_by("at")
                .values_list("at", "memory_used_kib", "memory_free_kib", "cpu_pct"))
        return JsonResponse({"host": host.name, "range": name, "step_s": step, "from": int((now - span).timestamp()),
                             "to": int(now.timestamp()), **load.chart_series(rows)})


class HostDetailPartialView(HostDetailView):
    template_name = "hosts/partials/host_detail_body.html"


class HostAddView(AdminRequiredMixin, FormView):
    template_name = "hosts/host_add.html"
    form_class = HostAddForm

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["portal_key"] = PortalKey.objects.order_by("pk").first()
        return context

    def form_valid(self, form):
        try:
            host, _job = services.host_create(
                name=form.cleaned_data["name"], connection=form.connection(), actor=Actor.from_request(self.request)
            )
        except services.ServiceRefused as exc:
            form.add_error(None, f"{exc.message} {exc.hint}")
            return self.form_invalid(form)
        messages.success(self.request, f"Added {host.name}. Check its SSH host key fingerprint below.")
        return redirect("hosts:host_trust", pk=host.pk)


class HostTrustView(AdminRequiredMixin, HostAccessMixin, DetailView):
    host_role = RoleChoices.ADMIN
    """Shows the host key fingerprint the host presented; POST confirms (pins) it."""

    model = Host
    template_name = "hosts/host_trust.html"
    context_object_name = "host"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        host = self.object
        context["fetch_job"] = (
            Job.objects.filter(kind=HostJobKindChoices.FETCH_HOST_KEY, target_type="host", target_id=str(host.pk))
            .defer("log")
            .first()
        )
        context["form"] = HostTrustForm(initial={"fingerprint": host.presented_host_key_fingerprint})
        context["portal_key"] = PortalKey.objects.order_by("pk").first()
        return context

    def post(self, request, *args, **kwargs):
        host = self.get_object()
        form = HostTrustForm(request.POST)
        if not form.is_valid():
            messages.error(request, "The confirmation was incomplete; check the fingerprint and confirm again.")
            return redirect("hosts:host_trust", pk=host.pk)
        try:
            job = services.host_key_trust(
                host=host, fingerprint=form.cleaned_data["fingerprint"], actor=Actor.from_request(request)
            )
        except services.ServiceRefused as exc:
            messages.error(request, f"{exc.message} {exc.hint}")
            return redirect("hosts:host_trust", pk=host.pk)
        messages.success(request, f"Host key trusted. Gathering facts from {host.name} (job #{job.pk}).")
        return redirect("hosts:host_detail", pk=host.pk)


class HostKeyFetchView(AdminRequiredMixin, HostAccessMixin, View):
    host_role = RoleChoices.ADMIN

    def post(self, request, pk):
        host = get_object_or_404(Host, pk=pk)
        services.host_key_fetch_request(host=host, actor=Actor.from_request(request))
        messages.info(request, f"Asking {host.name} for its SSH host key.")
        return redirect("hosts:host_trust", pk=host.pk)


class HostRefreshView(OperatorRequiredMixin, HostAccessMixin, View):
    host_role = RoleChoices.OPERATOR

    def post(self, request, pk):
        host = get_object_or_404(Host, pk=pk)
        job = services.host_refresh_request(host=host, actor=Actor.from_request(request))
        if job is None:
            messages.error(
                request,
                f"{host.name} cannot be refreshed while it is '{host.get_status_display()}'. "
                "Confirm its host key first.",
            )
            return redirect("hosts:host_detail", pk=host.pk)
        return redirect("core:job_detail", pk=job.pk)


class HostMaintenanceView(OperatorRequiredMixin, HostAccessMixin, View):
    """POST in_maintenance=on|off: no migrations into the host while it is in maintenance."""

    host_role = RoleChoices.OPERATOR

    def post(self, request, pk):
        host = get_object_or_404(Host, pk=pk)
        value = request.POST.get("in_maintenance")
        if value not in ("on", "off"):
            messages.error(request, "Say whether the host goes into maintenance (on) or out of it (off).")
            return redirect("hosts:host_detail", pk=host.pk)
        host = services.host_maintenance_set(host=host, in_maintenance=value == "on", actor=Actor.from_request(request))
        messages.success(
            request,
            f"{host.name} is in maintenance: no guest will be migrated to it."
            if host.in_maintenance
            else f"{host.name} is out of maintenance.",
        )
        return redirect("hosts:host_detail", pk=host.pk)


class PortalKeyView(AdminRequiredMixin, TemplateView):
    """The portal's public key, to install in authorized_keys on hosts; POST generates it."""

    template_name = "hosts/portal_key.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["portal_key"] = PortalKey.objects.order_by("pk").first()
        return context

    def post(self, request):
        services.portal_key_get_or_create(actor=Actor.from_request(request))
        return redirect("hosts:portal_key")


class VMMixin:
    def get_vm(self) -> VirtualMachine:
        return get_object_or_404(
            VirtualMachine.objects.select_related("host"), host_id=self.kwargs["host_pk"], uuid=self.kwargs["vm_uuid"]
        )


class VMDetailView(ViewerRequiredMixin, HostAccessMixin, VMMixin, DetailView):
    template_name = "hosts/vm_detail.html"
    context_object_name = "vm"

    def get_object(self, queryset=None):
        return self.get_vm()

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        vm = self.object
        context["actions"] = vm_actions_available(vm.state, persistent=vm.persistent) if vm.host.is_connectable else []
        # What holds the guest now: its badge, and the buttons held back until it ends.
        context["lease"] = lease_holder(vm.uuid)
        disks = list(vm.disks.all())
        context["disks"] = disks
        context["disk_totals"] = disk_sizes.guest_totals(disks)
        # Data disks no refresh sized: the page says what a copy of them assumes.
        context["unsized_disks"] = [d.target for d in disks if d.device in disk_sizes.IMAGE_DEVICES
                                    and d.capacity_bytes is None and d.allocation_bytes is None]
        context["assumed_disk_bytes"] = disk_sizes.ASSUMED_DISK_BYTES
        context["nics"] = vm.nics.all()
        context["jobs"] = _recent_jobs("virtualmachine", vm.pk)
        return context


class VMDetailPartialView(VMDetailView):
    template_name = "hosts/partials/vm_detail_body.html"


class VMActionView(OperatorRequiredMixin, HostAccessMixin, VMMixin, TemplateView):
    """GET: the confirm step. POST: queue the action and go to its job page."""

    host_role = RoleChoices.OPERATOR

    template_name = "hosts/vm_action_confirm.html"

    def get_action(self) -> VMActionChoices:
        try:
            return VMActionChoices(self.kwargs["action"])
        except ValueError:
            raise Http404("No such action.") from None

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["vm"] = self.get_vm()
        context["action"] = self.get_action()
        return context

    def post(self, request, *args, **kwargs):
        vm = self.get_vm()
        action = self.get_action()
        try:
            job = services.vm_action_request(vm=vm, action=action, actor=Actor.from_request(request))
        except services.ServiceRefused as exc:
            messages.error(request, f"{exc.message} {exc.hint}")
            return redirect(reverse("hosts:vm_detail", kwargs={"host_pk": vm.host_id, "vm_uuid": vm.uuid}))
        return redirect("core:job_detail", pk=job.pk)
