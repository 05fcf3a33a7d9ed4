"""Host maintenance pages: the evacuation plan (enter), an evacuation's live page with its
Pause/Resume/Cancel, the return plan (exit) and the list of evacuations.

Views only read, validate and call services. The plan page asks the hosts for their facts (one
gather for the whole host, once per host and host pair) because the plan shown is the plan the
admin confirms; everything after Confirm runs in the worker.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View
from django.views.generic import DetailView, TemplateView

from core.actors import Actor
from core.choices import RoleChoices
from core.errors import PortalError, ServiceRefused
from core.keyset import keyset_page
from core.roles import OperatorRequiredMixin, ViewerRequiredMixin, user_has_role
from hosts.models import Host
from hosts.permissions import HostAccessMixin, hosts_to_plan_on, records_for
from migrations_app.models import MigrationSample
from migrations_app.payloads import sample_payload
from migrations_app.verdicts import worst

from . import planning, services
from .choices import EvacuationStatusChoices as ES, ItemActionChoices as IA, ItemStatusChoices as IS
from .forms import ConfirmPlanForm, ExitForm, PlanChoicesForm, keep_fields
from .models import Evacuation
from .payloads import evacuation_payload

EVACUATION_PAGE_SIZE = 50
CHOICE_KEYS = ("concurrency", "strategy", "copy_storage", "exclude", "shutdown")


def make_plan(*, host: Host, **choices) -> planning.EvacuationPlan:
    """The plan the page shows and Confirm executes, with the hosts asked (unit tests replace this)."""
    return planning.evacuation_plan(host=host, check_hosts=True, **choices)


def _refusal_text(exc: PortalError) -> str:
    return f"{exc.message} {exc.hint}".strip()


def _plan(host: Host, form: PlanChoicesForm, **extra) -> tuple[planning.EvacuationPlan | None, PortalError | None]:
    try:
        return make_plan(host=host, candidates=form.candidate_scope, **form.choices(), **extra), None
    except PortalError as exc:  # a host could not be asked: say so, never a 500
        return None, exc


def _default_form(host: Host, user) -> PlanChoicesForm:
    form = PlanChoicesForm(host=host, data=_defaults(), candidates=_destinations(user))
    form.is_valid()
    return form


def _destinations(user):
    """Where the plans shown to this user may send guests (Confirm checks Operator on them)."""
    return hosts_to_plan_on(user)


class PlanView(ViewerRequiredMixin, HostAccessMixin, View):
    host_post_role = RoleChoices.OPERATOR

    """GET: the plan for emptying the host (Recalculate is a GET with the choices). POST: confirm it (Operator)."""

    def _render(self, request, host, form, plan, *, problem=None, errors=(), status=200):
        errors = list(errors)
        if problem is not None:
            errors.append("Could not ask the hosts: " + _refusal_text(problem))
            if status == 200:
                status = 503
        context = {
            "host": host, "form": form, "plan": plan, "errors": errors,
            "rows": _rows(plan, form) if plan is not None else [],
            "confirm_fields": form.query() + (keep_fields(plan) if plan is not None else []),
            "active": services.active_evacuation(host),
        }
        return render(request, "maintenance/plan.html", context, status=status)

    def get(self, request, host_id):
        host = get_object_or_404(Host, pk=host_id)
        errors, status = [], 200
        if any(key in request.GET for key in CHOICE_KEYS) or any(k.startswith("to_") for k in request.GET):
            form = PlanChoicesForm(host=host, data=request.GET, candidates=_destinations(request.user))
            if not form.is_valid():
                # Bad choices: say which, and show the plan with the defaults instead.
                errors, status = ["These choices were not used: " + " ".join(form.error_lines())], 400
                form = _default_form(host, request.user)
        else:
            form = _default_form(host, request.user)
        plan, problem = _plan(host, form)
        return self._render(request, host, form, plan, problem=problem, errors=errors, status=status)

    def post(self, request, host_id):
        host = get_object_or_404(Host, pk=host_id)
        if not user_has_role(request.user, RoleChoices.OPERATOR):
            raise PermissionDenied("Entering maintenance needs the Operator role.")
        form = ConfirmPlanForm(host=host, data=request.POST, candidates=_destinations(request.user))
        if not form.is_valid():
            errors = ["Nothing was started: " + " ".join(form.error_lines())]
            shown = _default_form(host, request.user)
            plan, problem = _plan(host, shown)
            return self._render(request, host, shown, plan, problem=problem, errors=errors, status=400)
        plan, problem = _plan(host, form, keep=form.keep())
        if problem is not None:
            return self._render(request, host, form, None, problem=problem, status=503)
        try:
            ev = services.evacuation_enter(host=host, actor=Actor.from_request(request), plan=plan,
                                           expected_fingerprint=form.cleaned_data["fingerprint"], **form.choices())
        except ServiceRefused as exc:
            # The refusal, and the plan as it is now (a fresh one when it changed), to look at again.
            fresh, problem = _plan(host, form)
            return self._render(request, host, form, fresh, problem=problem,
                                errors=["Nothing was started: " + _refusal_text(exc)], status=409)
        messages.success(request, f"{host.name} is in maintenance: no new guests arrive; emptying it now.")
        return redirect(ev.get_absolute_url())


def _defaults() -> dict:
    return {"concurrency": "2", "strategy": "spread"}


def _rows(plan: planning.EvacuationPlan, form: PlanChoicesForm) -> list[dict]:
    """Each plan row with the override select bound to it (the select is the form's own field)."""
    chosen_excluded = set(form.cleaned_data.get("exclude", ())) if form.is_bound and form.is_valid() else set()
    chosen_shutdown = set(form.cleaned_data.get("shutdown", ())) if form.is_bound and form.is_valid() else set()
    known = {str(vm.uuid) for vm in form.guests}
    rows = []
    for row in plan.rows:
        rows.append({
            "row": row,
            "override": form.override_field(row.uuid) if row.uuid in known else None,
            "excluded": row.uuid in chosen_excluded,
            "shutdown": row.uuid in chosen_shutdown,
            # Only shown when there are verdicts (``worst`` of none is a fail: nothing checked).
            "verdict": worst(v.status for v in row.verdicts).value if row.verdicts else "",
            "action_label": IA(row.action).label,
        })
    return rows


class EvacuationListView(ViewerRequiredMixin, TemplateView):
    """Evacuations, returns and balance runs the user may see, newest first, keyset-paged."""

    template_name = "maintenance/evacuation_list.html"

    def get_context_data(self, **kwargs):
        queryset = (
            records_for(self.request.user, RoleChoices.VIEWER, Evacuation.objects.all())
            .select_related("host", "requested_by")
            .annotate(
                moves=Count("items", filter=~Q(items__action=IA.STAY)),
                done=Count("items", filter=Q(items__status=IS.SUCCEEDED) & ~Q(items__action=IA.STAY)),
                not_moved=Count("items", filter=Q(items__status__in=(IS.FAILED, IS.SKIPPED, IS.CANCELLED))),
            )
        )
        page = keyset_page(queryset, field="created", older=self.request.GET.get("older"),
                           newer=self.request.GET.get("newer"), size=EVACUATION_PAGE_SIZE)
        return super().get_context_data(page=page, evacuations=page.rows, **kwargs)


def _last_samples(state: dict) -> dict[int, float]:
    """The progress (% of memory sent) of each running item's migration, for the bars' first paint."""
    running = [i["migration"] for i in state["items"] if i["status"] == IS.RUNNING and i["migration"]]
    found = {}
    for migration_id in running:
        last = MigrationSample.objects.filter(migration_id=migration_id).order_by("-elapsed_ms", "-pk").first()
        if last is not None:
            found[migration_id] = sample_payload(last.elapsed_ms, last.stats)["pct"]
    return found


class EvacuationDetailView(ViewerRequiredMixin, HostAccessMixin, DetailView):
    model = Evacuation
    access_model = Evacuation  # Viewer on its host and every host its items move between
    template_name = "maintenance/evacuation_detail.html"
    context_object_name = "evacuation"

    def get_queryset(self):
        return Evacuation.objects.select_related("host", "returns", "requested_by")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        ev = self.object
        state = evacuation_payload(ev)
        pcts = _last_samples(state)
        for item in state["items"]:
            item["pct"] = pcts.get(item["migration"]) if item["status"] == IS.RUNNING else (
                100 if item["status"] == IS.SUCCEEDED else None)
        context["state"] = state
        context["return_runs"] = list(ev.return_runs.order_by("-created"))
        context["can_pause"] = ev.status == ES.RUNNING
        context["can_resume"] = ev.status == ES.PAUSED
        context["can_cancel"] = ev.status in (ES.RUNNING, ES.PAUSED)
        # The audit panel shows the evacuation's own events and those of its items' migrations.
        context["audit_children"] = [item.migration for item in ev.items.select_related("migration") if item.migration]
        return context


class EvacuationBodyPartialView(EvacuationDetailView):
    template_name = "maintenance/partials/evacuation_body.html"


class EvacuationActionView(OperatorRequiredMixin, HostAccessMixin, View):
    """POST pause / resume / cancel; GET cancel asks first."""

    access_model = Evacuation
    host_role = RoleChoices.OPERATOR

    ACTIONS = {"pause": services.evacuation_pause, "resume": services.evacuation_resume,
               "cancel": services.evacuation_cancel}

    def get(self, request, pk, action):
        ev = get_object_or_404(Evacuation.objects.select_related("host"), pk=pk)
        if action != "cancel":
            raise Http404("Only Cancel asks first.")
        return render(request, "maintenance/evacuation_cancel.html", {"evacuation": ev})

    def post(self, request, pk, action):
        ev = get_object_or_404(Evacuation, pk=pk)
        service = self.ACTIONS.get(action)
        if service is None:
            raise Http404("No such action.")
        try:
            service(evacuation=ev, actor=Actor.from_request(request))
        except ServiceRefused as exc:
            messages.error(request, _refusal_text(exc))
        else:
            done = {"pause": "Paused: running guests finish, no new one starts.",
                    "resume": "Resumed.", "cancel": "Cancelling: running migrations are aborted; guests stay where they are."}
            messages.success(request, done[action])
        return redirect(ev.get_absolute_url())


class ExitView(ViewerRequiredMixin, HostAccessMixin, View):
    host_post_role = RoleChoices.OPERATOR

    """GET: the return plan. POST (Operator): exit, bringing guests home or not."""

    def _render(self, request, host, *, status=200, errors=()):
        plan = services.return_plan(host=host, bring_back=True, sources=_destinations(request.user))
        context = {"host": host, "plan": plan, "errors": list(errors), "active": services.active_evacuation(host),
                   "starts": [r for r in plan.rows if r.action == IA.START]}
        return render(request, "maintenance/exit.html", context, status=status)

    def get(self, request, host_id):
        return self._render(request, get_object_or_404(Host, pk=host_id))

    def post(self, request, host_id):
        host = get_object_or_404(Host, pk=host_id)
        if not user_has_role(request.user, RoleChoices.OPERATOR):
            raise PermissionDenied("Exiting maintenance needs the Operator role.")
        form = ExitForm(request.POST)
        if not form.is_valid():
            return self._render(request, host, status=400, errors=[
                f"{form.fields[name].label or name}: {e}" for name, errors in form.errors.items() for e in errors])
        bring_back = form.cleaned_data["bring_back"]
        try:
            ev = services.maintenance_exit(host=host, actor=Actor.from_request(request), bring_back=bring_back,
                                           concurrency=form.cleaned_data["concurrency"] or 2)
        except ServiceRefused as exc:
            return self._render(request, host, status=409, errors=[_refusal_text(exc)])
        if ev is not None:
            messages.success(request, f"{host.name} is out of maintenance; its guests are on their way home.")
            return redirect(ev.get_absolute_url())
        messages.success(request, f"{host.name} is out of maintenance." + ("" if bring_back else " Guests stay where they are."))
        return redirect("hosts:host_detail", pk=host.pk)
