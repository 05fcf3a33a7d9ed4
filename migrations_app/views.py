"""Migration pages: the wizard (options → destinations → check and confirm), the migration page
with its live chart, the operator's POST actions, and the cold-migration form and page.
Views read, validate and call services."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views import View
from django.utils.http import urlencode
from django.views.generic import DetailView, FormView, TemplateView

from core.actors import Actor
from core.keyset import keyset_page
from core.models import AuditEvent, Job
from core.choices import RoleChoices
from core.roles import OperatorRequiredMixin, ViewerRequiredMixin
from hosts.choices import VMStateChoices
from hosts.leases import lease_holder
from hosts.models import Host, VirtualMachine
from hosts.permissions import HostAccessMixin, hosts_for, records_for
from storage.models import Share

from . import policy, states
from .choices import (
    ColdMigrationStatusChoices as C,
    MigrationActionChoices,
    MigrationStatusChoices as S,
    PreflightRunStatusChoices,
    VerdictStatusChoices,
)
from .filtersets import filtered_migrations
from .forms import ColdMigrationForm, MigrationOptionsForm
from .image_repairs import run_repairs
from .models import ColdMigration, Migration, MigrationPlan, PreflightRun
from .options import MigrationOptions, from_dict, libvirt_flags
from .payloads import chart_samples
from .preflight import rank_destinations
from .services import cold as cold_services, live, plans, repairs
from .services.refusals import ServiceRefused
from .virsh import virsh_migrate_command

MIGRATION_PAGE_SIZE = 100
COLD_PAGE_SIZE = 50


def _int_param(request, name: str) -> int | None:
    value = request.GET.get(name, "")
    return int(value) if value.isdigit() and len(value) < 12 else None


def _options_rows(options: MigrationOptions) -> list[tuple[str, str]]:
    """The options in words, for the confirm step and the migration page."""
    rows = [
        ("Mode", "live" if options.live else "offline"),
        ("Connection", "peer-to-peer" if options.peer_to_peer else "managed"),
        ("Tunnelled", "yes" if options.tunnelled else "no"),
        ("Copy non-shared storage", "yes" if options.copy_storage else "no"),
        ("Auto-converge", "yes" if options.auto_converge else "no"),
        ("Allow post-copy", "yes" if options.allow_postcopy else "no"),
        ("Compression", "yes" if options.compressed else "no"),
        ("Bandwidth limit", f"{options.bandwidth_mibps} MiB/s" if options.bandwidth_mibps else "none"),
        ("Maximum downtime", f"{options.max_downtime_ms} ms" if options.max_downtime_ms else "QEMU's default"),
        ("Persist on destination", "yes" if options.persist_destination else "no"),
        ("Undefine on source", "yes" if options.undefine_source else "no"),
    ]
    if options.completion_timeout_s:
        rows.append(("Completion timeout", f"{options.completion_timeout_s} s, then {options.timeout_action}"))
    else:
        rows.append(("Completion timeout", "none"))
    return rows


# ---------------------------------------------------------------------------
# The wizard


class MigrationWizardView(OperatorRequiredMixin, HostAccessMixin, FormView):
    host_role = RoleChoices.OPERATOR

    """Step 1: options. POST checks every candidate destination in the background."""

    template_name = "migrations_app/wizard_options.html"
    form_class = MigrationOptionsForm

    def get_vm(self) -> VirtualMachine:
        return get_object_or_404(VirtualMachine.objects.select_related("host"), pk=self.kwargs["vm_pk"])

    def _previous(self) -> tuple[MigrationOptions | None, Host | None, Migration | None]:
        """Options to start from: a plan being changed, or a migration being reversed."""
        vm = self.get_vm()
        plan_id, reverse_id = _int_param(self.request, "plan"), _int_param(self.request, "reverse")
        if plan_id is not None:
            plan = MigrationPlan.objects.filter(pk=plan_id, vm_uuid=vm.uuid).first()
            if plan is not None:
                return from_dict(plan.options), None, None
        if reverse_id is not None:
            previous = Migration.objects.filter(pk=reverse_id, vm_uuid=vm.uuid).select_related("source").first()
            if previous is not None:
                return from_dict(previous.options), previous.source, previous
        return None, None, None

    def get_initial(self):
        options, destination, _previous = self._previous()
        return MigrationOptionsForm.initial_for(options or MigrationOptions(), destination=destination)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        vm = self.get_vm()
        _options, destination, previous = self._previous()
        form = context["form"]
        context.update(
            vm=vm, step=1, reversing=previous, back_to=destination,
            check_fields=[form[name] for name in (
                "tunnelled", "copy_storage", "auto_converge", "allow_postcopy", "compressed",
                "persist_destination", "undefine_source",
            )],
            candidates=hosts_for(self.request.user, RoleChoices.OPERATOR).exclude(pk=vm.host_id).count(),
            held=lease_holder(vm.uuid),
        )
        return context

    def form_valid(self, form):
        vm = self.get_vm()
        try:
            plan = plans.migration_plan_create(vm=vm, options=form.options, actor=Actor.from_request(self.request),
                                               destinations=hosts_for(self.request.user, RoleChoices.OPERATOR))
        except ServiceRefused as exc:
            form.add_error(None, f"{exc.message} {exc.hint}".strip())
            return self.form_invalid(form)
        destination = form.cleaned_data.get("destination")
        if destination is not None and plan.runs.filter(destination=destination).exists():
            return redirect("migrations_app:plan_destination", pk=plan.pk, host_pk=destination.pk)
        return redirect("migrations_app:plan", pk=plan.pk)


class PlanMixin:
    def get_plan(self) -> MigrationPlan:
        return get_object_or_404(MigrationPlan.objects.select_related("source", "vm"), pk=self.kwargs["pk"])


class PlanView(OperatorRequiredMixin, HostAccessMixin, PlanMixin, TemplateView):
    """Step 2: every candidate with its preflight verdict, filling in as the jobs finish."""

    template_name = "migrations_app/wizard_destinations.html"
    access_model = MigrationPlan
    host_role = RoleChoices.OPERATOR  # on the guest's host, and on the destination of the URL

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        plan = self.get_plan()
        # Only the destinations this user may migrate to (a plan may be another admin's).
        mine = records_for(self.request.user, RoleChoices.OPERATOR, plan.runs.all())
        runs = rank_destinations(list(mine.select_related("destination", "destination__facts")))
        context.update(
            plan=plan, runs=runs, step=2, options_rows=_options_rows(from_dict(plan.options)),
            pending=sum(1 for r in runs if r.is_pending),
        )
        return context


class PlanCandidatesPartialView(PlanView):
    template_name = "migrations_app/partials/candidates.html"


class PlanDestinationView(OperatorRequiredMixin, HostAccessMixin, PlanMixin, TemplateView):
    """Step 3: the preflight grid for one destination; POST confirms (refused if any check failed)."""

    template_name = "migrations_app/wizard_confirm.html"
    access_model = MigrationPlan
    host_role = RoleChoices.OPERATOR  # on the guest's host and the destination (the URL's host_pk)

    def get_run(self, plan: MigrationPlan) -> PreflightRun:
        return get_object_or_404(
            PreflightRun.objects.select_related("destination"), plan=plan, destination_id=self.kwargs["host_pk"]
        )

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        plan = self.get_plan()
        run = self.get_run(plan)
        options = from_dict(plan.options)
        context.update(
            plan=plan, run=run, step=3, options_rows=_options_rows(options),
            can_confirm=run.status == PreflightRunStatusChoices.DONE and run.overall != VerdictStatusChoices.FAIL and plan.vm is not None,
            virsh=virsh_migrate_command(
                options, guest=plan.vm_name, source_uri=plan.source.effective_libvirt_uri,
                dest_uri=run.destination.effective_libvirt_uri,
            ),
            flags=libvirt_flags(options),
            held=lease_holder(plan.vm_uuid),
            repairs=[] if run.is_pending else run_repairs(run),
        )
        return context

    def post(self, request, *args, **kwargs):
        plan = self.get_plan()
        run = self.get_run(plan)
        if plan.vm is None:
            messages.error(request, f"{plan.vm_name} is no longer in the inventory; refresh its host and start again.")
            return redirect("migrations_app:plan", pk=plan.pk)
        if run.is_pending:
            messages.error(request, "The preflight for this destination is still running; confirm once it is done.")
            return redirect("migrations_app:plan_destination", pk=plan.pk, host_pk=run.destination_id)
        reverses = (
            Migration.objects.filter(
                vm_uuid=plan.vm_uuid, status=S.SUCCEEDED, source=run.destination, destination=plan.source
            ).order_by("-created").first()
        )
        try:
            migration = live.migration_request(
                vm=plan.vm, destination=run.destination, options=from_dict(plan.options),
                actor=Actor.from_request(request), plan=plan, reverses=reverses,
            )
        except ServiceRefused as exc:
            messages.error(request, f"{exc.message} {exc.hint}".strip())
            return redirect("migrations_app:plan_destination", pk=plan.pk, host_pk=run.destination_id)
        return redirect("migrations_app:migration_detail", pk=migration.pk)


class PlanRepairPermissionsView(OperatorRequiredMixin, HostAccessMixin, PlanMixin, View):
    """POST: give the images this preflight flagged QEMU's user as owner, then check again."""

    access_model = MigrationPlan
    host_role = RoleChoices.OPERATOR

    def post(self, request, pk, host_pk):
        plan = self.get_plan()
        run = get_object_or_404(PreflightRun.objects.select_related("destination"), plan=plan, destination_id=host_pk)
        try:
            repairs.image_permissions_repair_request(run=run, actor=Actor.from_request(request))
        except ServiceRefused as exc:
            messages.error(request, f"{exc.message} {exc.hint}".strip())
        else:
            messages.success(request, f"Repairing the image permissions on {run.destination.name}; "
                                      "the checks run again when it is done.")
        return redirect("migrations_app:plan_destination", pk=plan.pk, host_pk=host_pk)


class PlanGridPartialView(PlanDestinationView):
    template_name = "migrations_app/partials/confirm_body.html"

    def post(self, request, *args, **kwargs):
        raise Http404


# ---------------------------------------------------------------------------
# Migrations


def _cold_list(user):
    return records_for(user, RoleChoices.VIEWER, ColdMigration.objects.all()).select_related("source", "destination", "share__server", "requested_by").defer(
        "verdicts", "files", "original_xml", "new_xml", "rollback", "summary"
    )[:COLD_PAGE_SIZE]


class MigrationListView(ViewerRequiredMixin, TemplateView):
    """Live migrations (filtered, keyset pages newest first), and below them the latest cold
    ones: the history of every move."""

    template_name = "migrations_app/migration_list.html"

    def get_context_data(self, **kwargs):
        filterset, queryset = filtered_migrations(self.request.GET)
        queryset = records_for(self.request.user, RoleChoices.VIEWER, queryset)
        page = keyset_page(queryset.select_related("source", "destination", "requested_by").defer("verdicts", "summary"),
                           field="created", older=self.request.GET.get("older"), newer=self.request.GET.get("newer"),
                           size=MIGRATION_PAGE_SIZE)
        params = {k: v for k, v in self.request.GET.items() if k not in ("older", "newer") and v}
        return super().get_context_data(filter=filterset, page=page, migrations=page.rows,
                                        filter_query=urlencode(params), cold_migrations=_cold_list(self.request.user),
                                        **kwargs)


class MigrationListPartialView(MigrationListView):
    # The cold rows' queryset in its context is lazy: this template never runs it.
    template_name = "migrations_app/partials/migration_rows.html"


class ColdMigrationRowsPartialView(ViewerRequiredMixin, TemplateView):
    template_name = "migrations_app/partials/cold_rows.html"

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "cold_migrations": _cold_list(self.request.user)}


class MigrationDetailView(ViewerRequiredMixin, HostAccessMixin, DetailView):
    access_model = Migration  # Viewer on its source and its destination
    template_name = "migrations_app/migration_detail.html"
    context_object_name = "migration"
    queryset = Migration.objects.select_related("source", "destination", "requested_by", "job", "reverses")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        migration = self.object
        options = from_dict(migration.options)
        samples = chart_samples(migration.samples.values_list("elapsed_ms", "stats"))
        vm_now = VirtualMachine.objects.filter(uuid=migration.vm_uuid).select_related("host").first()
        context.update(
            options=options,
            options_rows=_options_rows(options),
            samples=samples,
            last_sample=samples[-1] if samples else None,
            vm_now=vm_now,
            events=AuditEvent.objects.filter(target_type="migration", target_id=str(migration.pk)).order_by("time", "pk"),
            jobs=Job.objects.filter(target_type="migration", target_id=str(migration.pk)).defer("log", "result"),
            can_abort=states.can_abort(migration),
            can_force=states.can_force(migration),
            can_reconcile=states.can_reconcile(migration),
            can_migrate_back=(
                migration.status == S.SUCCEEDED and vm_now is not None and vm_now.host_id == migration.destination_id
                and lease_holder(migration.vm_uuid) is None
            ),
            force_action="switch to post-copy" if options.allow_postcopy else "raise the allowed downtime",
        )
        return context


_PARTS = {"head": "migrations_app/partials/migration_head.html", "details": "migrations_app/partials/migration_details.html"}


class MigrationPartialView(MigrationDetailView):
    """One region of the migration page, re-fetched when its status changes."""

    def get_template_names(self):
        try:
            return [_PARTS[self.kwargs["part"]]]
        except KeyError:
            raise Http404("No such part.") from None


class MigrationActionView(OperatorRequiredMixin, HostAccessMixin, View):
    """POST only: abort, force-complete or reconcile, then back to the migration page."""

    access_model = Migration
    host_role = RoleChoices.OPERATOR  # on its source and its destination

    def post(self, request, pk, action):
        migration = get_object_or_404(Migration.objects.select_related("source", "destination"), pk=pk)
        actor = Actor.from_request(request)
        try:
            if action == MigrationActionChoices.ABORT:
                live.migration_abort(migration=migration, actor=actor)
                messages.info(request, "Abort requested: the guest stays on the source.")
            elif action == MigrationActionChoices.FORCE_COMPLETE:
                live.migration_force_complete(migration=migration, actor=actor)
                messages.info(request, "Force complete requested.")
            elif action == MigrationActionChoices.RECONCILE:
                live.migration_reconcile_request(migration=migration, actor=actor, reason="asked by an operator")
                messages.info(request, "Asking both hosts where the guest runs.")
            else:
                raise Http404("No such action.")
        except ServiceRefused as exc:
            messages.error(request, f"{exc.message} {exc.hint}".strip())
        return redirect(reverse("migrations_app:migration_detail", kwargs={"pk": migration.pk}))


# ---------------------------------------------------------------------------
# Cold migration: one form, then the page that follows the job


_COLD_STAGES = (
    (C.QUEUED, "Waiting for a worker"),
    (C.CHECKING, "Check"),
    (C.COPYING, "Copy and verify"),
    (C.DEFINING, "Move the definition"),
    (C.STARTING, "Start"),
)


def _cold_stages(cold: ColdMigration) -> list[tuple[str, str]]:
    """The stages of a running cold migration, each "done", "current" or "" (to come)."""
    stages = [(status, label) for status, label in _COLD_STAGES if status != C.STARTING or cold.start]
    order = [status for status, _label in stages]
    at = order.index(cold.status) if cold.status in order else len(order)
    return [(label, "done" if i < at else "current" if i == at else "") for i, (_s, label) in enumerate(stages)]


class ColdMigrationWizardView(OperatorRequiredMixin, HostAccessMixin, FormView):
    host_role = RoleChoices.OPERATOR

    """Destination and storage for a shut-off guest; POST asks the service, then its page."""

    template_name = "migrations_app/cold_wizard.html"
    form_class = ColdMigrationForm

    def get_vm(self) -> VirtualMachine:
        if not hasattr(self, "_vm"):
            self._vm = get_object_or_404(VirtualMachine.objects.select_related("host"), pk=self.kwargs["vm_pk"])
        return self._vm

    def _preselected(self) -> Host | None:
        """?to=<host pk>: "migrate back" preselects the former source."""
        host_id = _int_param(self.request, "to")
        return Host.objects.filter(pk=host_id).first() if host_id is not None else None

    def get_form_kwargs(self):
        user = self.request.user
        return {**super().get_form_kwargs(), "vm": self.get_vm(),
                "destinations": hosts_for(user, RoleChoices.OPERATOR),
                "shares": records_for(user, RoleChoices.OPERATOR, Share.objects.all())}

    def get_initial(self):
        to = self._preselected()
        return {"destination": to.pk if to else None, "share": ""}

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        vm = self.get_vm()
        to = self._preselected()
        disks = list(vm.disks.all())
        estimate, timeout_s = policy.cold_copy_plan(disks)
        context.update(
            vm=vm,
            disks=disks,
            copy_estimate=estimate,
            copy_timeout_s=timeout_s,
            shut_off=vm.state == VMStateChoices.SHUTOFF,
            back_to=to if to is not None and to.pk != vm.host_id else None,
            held=lease_holder(vm.uuid),
        )
        return context

    def form_valid(self, form):
        data = form.cleaned_data
        try:
            cold = cold_services.cold_migration_request(
                vm=self.get_vm(), destination=data["destination"], share=data["share"], start=data["start"],
                keep_source=data["keep_source"], actor=Actor.from_request(self.request),
            )
        except ServiceRefused as exc:
            form.add_error(None, exc.message)
            if exc.hint:
                form.add_error(None, f"What to do: {exc.hint}")
            return self.form_invalid(form)
        return redirect("migrations_app:cold_detail", pk=cold.pk)


class ColdMigrationDetailView(ViewerRequiredMixin, HostAccessMixin, DetailView):
    """Status, progress, checks, files, outcome and undo of one cold migration; live while it runs."""

    access_model = ColdMigration

    template_name = "migrations_app/cold_detail.html"
    context_object_name = "cold"
    queryset = ColdMigration.objects.select_related(
        "source", "destination", "share", "share__server", "requested_by", "job"
    )

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        cold = self.object
        vm_now = VirtualMachine.objects.filter(uuid=cold.vm_uuid).select_related("host").first()
        busy = lease_holder(cold.vm_uuid) is not None
        job = cold.job
        context.update(
            vm_now=vm_now,
            # The page follows the job while it runs; once it has ended there is nothing to follow.
            live_job=job if job is not None and not job.is_terminal else None,
            copied=[f for f in cold.files if f.get("route") != "none"],
            stages=_cold_stages(cold),
            can_retry=(
                cold.status == C.FAILED and not busy and vm_now is not None and vm_now.host_id == cold.source_id
            ),
            can_migrate_back=(
                cold.status == C.SUCCEEDED and not cold.same_host and not busy
                and vm_now is not None and vm_now.host_id == cold.destination_id
            ),
            events=AuditEvent.objects.filter(target_type="coldmigration", target_id=str(cold.pk)).order_by("time", "pk"),
        )
        return context


class ColdMigrationPartialView(ColdMigrationDetailView):
    """The live region of the cold-migration page, re-fetched on each event of its job."""

    template_name = "migrations_app/partials/cold_status.html"
