"""Shared-storage pages. Views only read, validate and call services; no host I/O here."""

from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404, redirect
from django.views import View
from django.views.generic import DetailView, FormView, TemplateView

from core.actors import Actor
from core.models import Job
from core.choices import RoleChoices
from core.roles import AdminRequiredMixin, ViewerRequiredMixin
from hosts.filtersets import form_errors
from hosts.inventory_page import MAX_PARAM_LENGTH, SENTINEL_ID, sort_marks, sort_queries, url_maker
from hosts.models import Host
from hosts.permissions import HostAccessMixin, hosts_for, records_for

from . import services
from .choices import SETUP_ACTIVE_STATES, SetupStatusChoices, StepStateChoices, StorageJobKindChoices
from .filtersets import SHARES_PER_PAGE, SORT_KEYS, ShareFilterSet
from .forms import ShareForm
from .models import Share, ShareSetup
from .steps import plan_from_json, rendered_step
from .validation import DEFAULT_OPTIONS

GRID_COLUMNS = (
    ("mounted", "Mounted / exported"),
    ("same_file", "Same file everywhere"),
    ("qemu_rw", "QEMU user reads & writes"),
    ("pool", "libvirt pool active"),
)


class ShareListView(ViewerRequiredMixin, TemplateView):
    """A page of shares, filtered and sorted by the query string (storage/filtersets.py), in
    three queries whatever their number: the count, the page with its servers, their clients
    (and the host's name when the list is of one host's shares)."""

    template_name = "storage/share_list.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        params = {key: value[:MAX_PARAM_LENGTH] for key, value in self.request.GET.items() if value}
        visible = records_for(self.request.user, RoleChoices.VIEWER, Share.objects.all())
        filterset = ShareFilterSet(self.request.GET, queryset=visible)
        errors = form_errors(filterset)
        shares = Share.objects.none() if errors else filterset.qs
        clients = Prefetch("clients", queryset=Host.all_objects.order_by("name"))
        page = Paginator(shares.select_related("server").prefetch_related(clients), SHARES_PER_PAGE) \
            .get_page(params.get("page"))
        share_url = url_maker("storage:share_detail", SENTINEL_ID)
        host_url = url_maker("hosts:host_detail", SENTINEL_ID)
        rows = [{"share": share, "url": share_url(share.pk), "server_url": host_url(share.server_id),
                 "clients": [(client.name, host_url(client.pk)) for client in share.clients.all()]}
                for share in page.object_list]
        filter_params = {key: value for key, value in params.items() if key != "page"}
        host_id = filterset.form.cleaned_data.get("host") if not errors else None
        context.update(
            host_shown=Host.all_objects.filter(pk=host_id).only("pk", "name").first() if host_id else None,
            all_hosts_query=urlencode({key: value for key, value in filter_params.items() if key != "host"}),
            filter=filterset, filter_errors=errors, rows=rows, page=page,
            filter_query=urlencode(filter_params), sort=params.get("sort", ""),
            sort_queries=sort_queries(params, keys=SORT_KEYS), sort_marks=sort_marks(params.get("sort", ""), SORT_KEYS),
            filtered=any(key not in ("page", "sort") for key in params),
        )
        return context


class ShareCreateView(AdminRequiredMixin, HostAccessMixin, FormView):
    """Step 1 of the wizard: what to share with whom. Planning (the dry run) follows as a job."""

    template_name = "storage/share_form.html"
    form_class = ShareForm
    host_role = RoleChoices.ADMIN  # on the server and every client

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "hosts": hosts_for(self.request.user, RoleChoices.ADMIN)}

    def post(self, request, *args, **kwargs):
        self.require_posted_hosts(RoleChoices.ADMIN, "server", "clients")
        return super().post(request, *args, **kwargs)

    def get_initial(self):
        return {"options": DEFAULT_OPTIONS, "export_path": "/srv/vmstore", "mount_path": "/mnt/vmstore"}

    def form_valid(self, form):
        try:
            share, _setup, _job = services.share_create(**form.service_arguments(), actor=Actor.from_request(self.request))
        except ValidationError as exc:  # the inventory changed between the form and the service
            for name, problems in exc.message_dict.items():
                for problem in problems:
                    form.add_error(name if name in form.fields else None, problem)
            return self.form_invalid(form)
        except services.ServiceRefused as exc:
            form.add_error(None, f"{exc.message} {exc.hint}")
            return self.form_invalid(form)
        return redirect("storage:share_detail", pk=share.pk)


def _badge(state: str, setup_status: str, running: bool) -> tuple[str, str]:
    """(label, css state) of a step's badge on the plan."""
    if state == StepStateChoices.ALREADY_DONE:
        return "already done", StepStateChoices.ALREADY_DONE
    if state == StepStateChoices.CHANGED:
        return "done", StepStateChoices.CHANGED
    if state == StepStateChoices.FAILED:
        return "failed", StepStateChoices.FAILED
    if setup_status == SetupStatusChoices.APPLYING:
        return ("running", StepStateChoices.RUNNING) if running else ("to do", StepStateChoices.PENDING)
    if setup_status == SetupStatusChoices.PLANNED:
        return "planned", StepStateChoices.PENDING
    return "not run", StepStateChoices.PENDING


def _step_rows(plan, outcomes: dict, setup_status: str) -> list[dict]:
    rows = []
    first_pending = True
    for step in plan.steps:
        outcome = outcomes.get(step.key) or {}
        state = outcome.get("state", StepStateChoices.PENDING)
        running = state == StepStateChoices.PENDING and first_pending
        if state == StepStateChoices.PENDING:
            first_pending = False
        label, css = _badge(state, setup_status, running)
        rows.append({**rendered_step(step), "state": state, "outcome": outcome, "badge": label, "badge_state": css})
    return rows


def _hosts_sections(rows: list[dict], notes) -> list[dict]:
    sections: dict[str, dict] = {}
    for row in rows:
        sections.setdefault(row["host"], {"host": row["host"], "steps": [], "notes": []})["steps"].append(row)
    for note in notes:
        sections.setdefault(note.host, {"host": note.host, "steps": [], "notes": []})["notes"].append(note)
    return list(sections.values())


class ShareDetailView(ViewerRequiredMixin, HostAccessMixin, DetailView):
    """The share, its latest setup (plan → progress → grid) and its history."""

    access_model = Share  # Viewer on its server and every client

    model = Share
    template_name = "storage/share_detail.html"
    context_object_name = "share"

    def get_queryset(self):
        return Share.objects.select_related("server").prefetch_related("clients")

    def get_setup(self):
        setup_pk = self.kwargs.get("setup_pk")
        setups = self.object.setups.select_related("plan_job", "apply_job")
        if setup_pk:
            return get_object_or_404(setups, pk=setup_pk)
        return setups.order_by("-created", "-pk").first()

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        share = self.object
        setup = self.get_setup()
        latest = share.setups.order_by("-created", "-pk").first()
        context["setup"] = setup
        context["is_latest"] = setup is not None and latest is not None and setup.pk == latest.pk
        context["history"] = share.setups.select_related("apply_job", "plan_job", "created_by")[:20]
        context["grid_columns"] = GRID_COLUMNS
        context["clients"] = share.clients.order_by("name")
        if setup is not None and setup.plan:
            plan = plan_from_json(setup.plan)
            rows = _step_rows(plan, setup.outcomes, setup.status)
            context["plan"] = plan
            context["summary"] = plan.summary
            context["sections"] = _hosts_sections(rows, plan.notes)
            context["proof_rows"] = [rendered_step(s) for s in plan.proof]
            context["failed_row"] = next((r for r in rows if r["state"] == StepStateChoices.FAILED), None)
            context["counts"] = {
                state: sum(1 for r in rows if r["state"] == state)
                for state in (StepStateChoices.ALREADY_DONE, StepStateChoices.CHANGED, StepStateChoices.FAILED, StepStateChoices.PENDING)
            }
            context["step_total"] = len(rows)
        verify_job = (
            Job.objects.filter(kind=StorageJobKindChoices.VERIFY, target_type="share", target_id=str(share.pk)).defer("log").first()
        )
        context["verify_job"] = verify_job
        if setup is not None:
            active_job = None
            if setup.status == SetupStatusChoices.DETECTING:
                active_job = setup.plan_job
            elif setup.status == SetupStatusChoices.APPLYING:
                active_job = setup.apply_job
            context["active_job"] = active_job
            context["live_job"] = active_job or setup.apply_job or setup.plan_job
            context["log_tail"] = (active_job.log or [])[-8:] if active_job is not None else []
            context["busy"] = setup.status in SETUP_ACTIVE_STATES
        if verify_job is not None and not verify_job.is_terminal:
            context["active_job"] = context["live_job"] = verify_job
            context["busy"] = True
        # The newest proof for the latest setup (a later "Verify now" included); an older setup's own.
        grid = share.last_grid if context["is_latest"] or setup is None else setup.grid
        context["grid"] = [{**row, "cells": [row.get(key) for key, _label in GRID_COLUMNS]} for row in grid or []]
        context["grid_ok"] = bool(grid) and all(row.get("ok") for row in grid)
        return context


class ShareDetailPartialView(ShareDetailView):
    template_name = "storage/partials/share_body.html"


class ShareApplyView(AdminRequiredMixin, HostAccessMixin, View):
    access_model = Share
    host_role = RoleChoices.ADMIN

    def post(self, request, pk, setup_pk):
        setup = get_object_or_404(ShareSetup.objects.select_related("share"), pk=setup_pk, share_id=pk)
        try:
            services.share_apply_request(setup=setup, actor=Actor.from_request(request),
                                         confirm_dir_change=request.POST.get("confirm_dir_change") == "1")
        except services.ServiceRefused as exc:
            messages.error(request, f"{exc.message} {exc.hint}")
        return redirect("storage:share_detail", pk=pk)


class SharePlanView(AdminRequiredMixin, HostAccessMixin, View):
    """Plan again: read the hosts afresh (resume after a failure, or repeat a setup)."""

    access_model = Share
    host_role = RoleChoices.ADMIN

    def post(self, request, pk):
        share = get_object_or_404(Share, pk=pk)
        try:
            services.share_plan_request(share=share, actor=Actor.from_request(request))
        except services.ServiceRefused as exc:
            messages.error(request, f"{exc.message} {exc.hint}")
        return redirect("storage:share_detail", pk=pk)


class ShareVerifyView(AdminRequiredMixin, HostAccessMixin, View):
    access_model = Share
    host_role = RoleChoices.ADMIN

    def post(self, request, pk):
        share = get_object_or_404(Share, pk=pk)
        try:
            services.share_verify_request(share=share, actor=Actor.from_request(request))
        except services.ServiceRefused as exc:
            messages.error(request, f"{exc.message} {exc.hint}")
        return redirect("storage:share_detail", pk=pk)
