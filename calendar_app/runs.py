"""The steps of an occurrence that ask the hosts, run as jobs: the dry run at T − lead and the start.

The start is the same as the host page's "Enter maintenance" with the default plan: one
``maintenance.services.evacuation_enter`` per host of the window, each recorded on the
occurrence (``OccurrenceHostRun``), a refusal with its reason.
"""

from __future__ import annotations

from django.conf import settings

from core.actors import Actor
from core.jobs import JobContext
from hosts.models import Host
from maintenance import planning
from maintenance import services as maintenance_services
from migrations_app.services.refusals import ServiceRefused

from .choices import OnStartChoices
from .models import OccurrenceHostRun, WindowOccurrence
from .services import occurrence_warn


def _hosts(occ: WindowOccurrence) -> list[Host]:
    return list(occ.window.hosts.select_related("facts").order_by("name"))


def plan_problems(plan: planning.EvacuationPlan) -> list[str]:
    """What in a dry run needs the admin before the start: blockers, no room, hosts not asked."""
    found = [f"{row.name}: {row.blocker.reason} {row.blocker.remedy}".strip() for row in plan.blockers]
    if plan.unreachable:
        found.append(f"not reachable for the check: {', '.join(plan.unreachable)}")
    return found


def run_check(*, occurrence_id: int, ctx: JobContext) -> dict:
    """The dry run before the start: a warning on the window (and the audit, the banner) if a guest cannot move."""
    occ = WindowOccurrence.objects.select_related("window").get(pk=occurrence_id)
    if occ.window.on_start != OnStartChoices.EVACUATE:
        return {"checked": 0}
    problems: list[str] = []
    for host in _hosts(occ):
        if not host.is_connectable:
            problems.append(f"{host.name} cannot be contacted: {host.get_status_display()}.")
            continue
        plan = planning.evacuation_plan(host=host)
        ctx.log(f"dry run for {host.name}: {len(plan.rows)} guest(s), {len(plan.blockers)} blocker(s)")
        problems += [f"{host.name}: {p}" for p in plan_problems(plan)]
    if problems:
        occurrence_warn(occurrence=occ, kind="dry-run", at_risk=True, message=(
            f"Dry run before {occ.start:%Y-%m-%d %H:%M} UTC: " + " ".join(problems)))
    return {"problems": problems}


def run_start(*, occurrence_id: int, ctx: JobContext) -> dict:
    """Put every host of the occurrence into maintenance with its default plan, recording each evacuation."""
    occ = WindowOccurrence.objects.select_related("window").get(pk=occurrence_id)
    if occ.window.on_start != OnStartChoices.EVACUATE:
        return {"evacuations": {}}
    actor = Actor.system()
    started = {}
    for host in _hosts(occ):
        run, _ = OccurrenceHostRun.objects.get_or_create(occurrence=occ, host=host)
        if run.evacuation_id or run.note:
            continue  # a retried job: this host was done
        try:
            plan = planning.evacuation_plan(host=host, concurrency=settings.VMPORTAL_CALENDAR_CONCURRENCY)
            ctx.log(f"{host.name}: {len(plan.rows)} guest(s) in the plan")
            ev = maintenance_services.evacuation_enter(
                host=host, actor=actor, concurrency=settings.VMPORTAL_CALENDAR_CONCURRENCY, plan=plan)
            OccurrenceHostRun.objects.filter(pk=run.pk).update(evacuation=ev)
            started[host.name] = ev.pk
        except ServiceRefused as exc:
            OccurrenceHostRun.objects.filter(pk=run.pk).update(note=f"Not put into maintenance: {exc.message}")
            occurrence_warn(occurrence=occ, kind="start-refused", at_risk=True,
                            message=f"{host.name} was not put into maintenance: {exc.message} {exc.hint}".strip())
    return {"evacuations": started}
