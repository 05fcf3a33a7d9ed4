"""Saved states: the list overall, one state with its restores, and the restore request."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views import View
from django.views.generic import DetailView, TemplateView

from core.actors import Actor
from core.errors import ServiceRefused
from core.ids import IdModelChoiceField
from core.keyset import keyset_page
from core.choices import RoleChoices
from core.roles import OperatorRequiredMixin, ViewerRequiredMixin
from hosts.models import Host, VirtualMachine
from hosts.permissions import HostAccessMixin, hosts_for, records_for
from storage.models import Share

from . import services, snapshot_services
from .models import GuestSnapshot, SavedState

LIST_PAGE_SIZE = 50


class SavedStateListView(ViewerRequiredMixin, TemplateView):
    """The saved states the user may see, newest first, keyset-paged."""

    template_name = "guest_state/state_list.html"

    def get_context_data(self, **kwargs):
        states = records_for(self.request.user, RoleChoices.VIEWER, SavedState.objects.all())
        page = keyset_page(states.select_related("host", "share").prefetch_related("restores"), field="created",
                           older=self.request.GET.get("older"), newer=self.request.GET.get("newer"),
                           size=LIST_PAGE_SIZE)
        return super().get_context_data(page=page, states=page.rows, **kwargs)


class SavedStateDetailView(ViewerRequiredMixin, HostAccessMixin, DetailView):
    template_name = "guest_state/state_detail.html"
    context_object_name = "state"
    access_model = SavedState  # Viewer on the host it was saved on

    def get_queryset(self):
        return SavedState.objects.select_related("host", "share")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["restores"] = self.object.restores.select_related("host")
        context["hosts"] = hosts_for(self.request.user, RoleChoices.OPERATOR)  # where it may be restored
        return context


class SavedStateRestoreView(OperatorRequiredMixin, HostAccessMixin, View):
    """Operator on the host the state was saved on, and on the host it is restored on."""

    host_role = RoleChoices.OPERATOR
    access_model = SavedState

    def post(self, request, pk):
        state = get_object_or_404(SavedState, pk=pk)
        field = IdModelChoiceField(queryset=Host.objects.all(), required=False)
        try:
            host = field.clean(request.POST.get("host") or None)
        except ValidationError:  # an unknown or malformed host id
            messages.error(request, "Choose a host from the list.")
            return redirect(state)
        if host is not None:
            self.require_host(host, RoleChoices.OPERATOR)
        try:
            services.restore_request(
                state=state, host=host, paused=request.POST.get("paused") == "on",
                changed_disks_confirmed=request.POST.get("confirm_changed") == "on", actor=Actor.from_request(request),
            )
        except ServiceRefused as refused:
            messages.error(request, f"{refused.message} {refused.hint}".strip())
        else:
            messages.success(request, f"Restore of {state.vm_name} queued.")
        return redirect(state)


class SavedStateSaveView(OperatorRequiredMixin, HostAccessMixin, View):
    host_role = RoleChoices.OPERATOR  # on the guest's host (the URL's vm_pk)

    def post(self, request, vm_pk):
        vm = get_object_or_404(VirtualMachine, pk=vm_pk)
        try:
            share = IdModelChoiceField(queryset=Share.objects.all(), required=False).clean(
                request.POST.get("share") or None)
        except ValidationError:  # an unknown or malformed share id
            messages.error(request, "Choose a share from the list, or give a directory.")
            return redirect("hosts:vm_detail", vm.host_id, vm.uuid)
        try:
            state = services.save_request(
                vm=vm, directory=request.POST.get("directory", "")[:300], share=share,
                note=request.POST.get("note", "")[:600], bypass_cache=request.POST.get("bypass_cache") == "on",
                actor=Actor.from_request(request),
            )
        except ServiceRefused as refused:
            messages.error(request, f"{refused.message} {refused.hint}".strip())
            return redirect("hosts:vm_detail", vm.host_id, vm.uuid)
        messages.success(request, f"Save of {vm.name} queued.")
        return redirect(state)


class ManagedSaveView(OperatorRequiredMixin, HostAccessMixin, View):
    """Managed save of the guest (POST), or with ``remove`` its discarding, confirmed."""

    host_role = RoleChoices.OPERATOR  # on the guest's host (the URL's vm_pk)
    remove = False

    def post(self, request, vm_pk):
        vm = get_object_or_404(VirtualMachine, pk=vm_pk)
        try:
            services.managed_save_request(vm=vm, remove=self.remove, confirmed=request.POST.get("confirm") == "on",
                                          actor=Actor.from_request(request))
        except ServiceRefused as refused:
            messages.error(request, f"{refused.message} {refused.hint}".strip())
        else:
            messages.success(request, (f"Discarding the managed save of {vm.name} queued." if self.remove
                                       else f"Managed save of {vm.name} queued: its next start resumes it."))
        return redirect("hosts:vm_detail", vm.host_id, vm.uuid)


class SavedStateDeleteView(OperatorRequiredMixin, HostAccessMixin, View):
    """Operator on the host that holds the file."""

    host_role = RoleChoices.OPERATOR

    def url_host(self, kwargs) -> Host | None:
        state = SavedState.objects.select_related("host").filter(pk=kwargs["pk"]).first()
        return state.host if state is not None else None

    def post(self, request, pk):
        state = get_object_or_404(SavedState.objects.select_related("host"), pk=pk)
        try:
            services.state_delete_request(state=state, confirmed=request.POST.get("confirm") == "on",
                                          actor=Actor.from_request(request))
        except ServiceRefused as refused:
            messages.error(request, f"{refused.message} {refused.hint}".strip())
        else:
            messages.success(request, f"Deletion of {state.path} queued.")
        return redirect(state)


# --- Snapshots (the guest page's card posts here; each goes back to the guest's page) ---------


def _guest_page(vm_or_snapshot):
    if isinstance(vm_or_snapshot, GuestSnapshot):
        return redirect(vm_or_snapshot.get_absolute_url())
    return redirect(reverse("hosts:vm_detail", args=[vm_or_snapshot.host_id, vm_or_snapshot.uuid]) + "#snapshots")


class SnapshotCreateView(OperatorRequiredMixin, HostAccessMixin, View):
    host_role = RoleChoices.OPERATOR  # on the guest's host (the URL's vm_pk)

    def post(self, request, vm_pk):
        vm = get_object_or_404(VirtualMachine, pk=vm_pk)
        try:
            snapshot = snapshot_services.snapshot_request(
                vm=vm, name=request.POST.get("name", "")[:200], note=request.POST.get("note", "")[:600],
                actor=Actor.from_request(request))
        except ServiceRefused as refused:
            messages.error(request, f"{refused.message} {refused.hint}".strip())
        else:
            messages.success(request, f"Snapshot {snapshot.name} of {vm.name} queued"
                             + (" (with its memory)." if snapshot.with_memory else " (its disks)."))
        return _guest_page(vm)


class SnapshotCheckView(OperatorRequiredMixin, HostAccessMixin, View):
    """Compare the guest's snapshot records with libvirt's list (a job; the page shows its result)."""

    host_role = RoleChoices.OPERATOR

    def post(self, request, vm_pk):
        vm = get_object_or_404(VirtualMachine, pk=vm_pk)
        snapshot_services.snapshot_check_request(vm=vm, actor=Actor.from_request(request))
        messages.success(request, f"Checking the snapshots of {vm.name} with libvirt.")
        return _guest_page(vm)


class SnapshotActionView(OperatorRequiredMixin, HostAccessMixin, View):
    """Revert to a snapshot, or delete it (``revert`` False); both confirmed. Operator on its host."""

    host_role = RoleChoices.OPERATOR
    access_model = GuestSnapshot
    revert = True

    def post(self, request, pk):
        snapshot = get_object_or_404(GuestSnapshot, pk=pk)
        request_it = (snapshot_services.snapshot_revert_request if self.revert
                      else snapshot_services.snapshot_delete_request)
        try:
            request_it(snapshot=snapshot, confirmed=request.POST.get("confirm") == "on",
                       actor=Actor.from_request(request))
        except ServiceRefused as refused:
            messages.error(request, f"{refused.message} {refused.hint}".strip())
        else:
            messages.success(request, (f"Revert of {snapshot.vm_name} to {snapshot.name} queued." if self.revert
                                       else f"Deletion of snapshot {snapshot.name} queued."))
        return _guest_page(snapshot)
