"""A run's one check of the hosts: every item's migration re-checks only what can change, on the
way out and on the way home; facts its plan gathered are kept, not gathered again (a failed
migration forgetting its pair's facts: test_evacuation_queue's retry)."""

from __future__ import annotations

from core.actors import Actor
from core.choices import JobStatusChoices
from hosts.models import Host
from maintenance import planning, services
from maintenance.choices import EvacuationStatusChoices as ES, ItemActionChoices as IA, ItemStatusChoices as IS

SYSTEM = Actor.system()


def _moves(ev):
    return [i for i in ev.items.select_related("migration").order_by("position") if i.action in (IA.LIVE, IA.OFFLINE)]


def test_every_item_rechecks_from_the_runs_one_gather_out_and_home(evac, world, django_capture_on_commit_callbacks):
    plan = planning.evacuation_plan(host=evac["a"], check_hosts=False)  # the plan asked no host
    with django_capture_on_commit_callbacks(execute=True):
        ev = services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=plan)
    ev.refresh_from_db()
    assert ev.status == ES.INCOMPLETE, ev.outcome  # local-1 stays
    assert ev.facts_job.status == JobStatusChoices.SUCCEEDED
    assert ev.facts_job.result == {"moves": 3, "kept": 0, "gathered": 3, "failed_sources": []}
    for item in _moves(ev):
        assert item.status == IS.SUCCEEDED, item.reason
        check = item.migration.summary["check"]
        assert check["mode"] == "re-check", (item.vm_name, check)
    home = Host.objects.get(pk=evac["a"].pk)
    with django_capture_on_commit_callbacks(execute=True):
        back = services.maintenance_exit(host=home, actor=SYSTEM)
    back.refresh_from_db()
    assert back.status == ES.SUCCEEDED, back.outcome
    # The way home gathered too: from each host the guests are on, towards their home, once.
    assert back.facts_job.result["gathered"] == 3 and back.facts_job.result["failed_sources"] == []
    for item in _moves(back):
        assert item.migration.summary["check"]["mode"] == "re-check", item.vm_name
        assert list(world.where(str(item.vm_uuid))) == ["kvm-a"]


def test_the_evacuation_page_says_how_the_hosts_were_checked(evac, world, viewer_client, check_hosts_for_run,
                                                             django_capture_on_commit_callbacks):
    plan = planning.evacuation_plan(host=evac["a"], check_hosts=False)
    ev = services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=plan)  # nothing committed: not run yet
    html = viewer_client.get(ev.get_absolute_url()).content.decode()
    assert 'data-status="queued"' in html and "Checking the hosts once for every move" in html
    check_hosts_for_run(ev)
    html = viewer_client.get(ev.get_absolute_url()).content.decode()
    assert 'data-status="succeeded"' in html and "Checked once for 3 move(s)" in html


def test_facts_the_plan_gathered_moments_ago_are_kept_for_the_run(evac, world, django_capture_on_commit_callbacks):
    plan = planning.evacuation_plan(host=evac["a"], check_hosts=True)
    with django_capture_on_commit_callbacks(execute=True):
        ev = services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=plan)
    ev.refresh_from_db()
    assert ev.facts_job.result["kept"] == 3 and ev.facts_job.result["gathered"] == 0
    assert {i.migration.summary["check"]["mode"] for i in _moves(ev)} == {"re-check"}


def test_moves_the_plan_checked_start_at_once_the_others_wait_for_the_check(evac, world):
    from maintenance.queue import evacuation_advance

    checked = planning.evacuation_plan(host=evac["a"], check_hosts=True)
    ev = services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=checked, concurrency=2)  # nothing committed
    assert ev.facts_job is not None and ev.facts_job.status == JobStatusChoices.QUEUED
    evacuation_advance(ev.pk)  # the check of the hosts has not run: the plan's facts are kept for the run
    assert ev.items.filter(status=IS.RUNNING).count() == 2
    for item in ev.items.filter(status=IS.RUNNING).select_related("migration"):
        assert item.migration is not None and item.action in (IA.LIVE, IA.OFFLINE)


def test_without_the_plans_facts_moves_wait_until_their_sources_check_ends(evac, world, check_hosts_for_run):
    from maintenance.queue import evacuation_advance

    unchecked = planning.evacuation_plan(host=evac["a"], check_hosts=False)
    ev = services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=unchecked, concurrency=2)
    evacuation_advance(ev.pk)
    assert ev.items.filter(status=IS.RUNNING).count() == 0  # waiting for the check
    check_hosts_for_run(ev)  # the queue is advanced as soon as kvm-a's moves are checked, before the job ends
    ev.refresh_from_db()
    assert ev.items.filter(status=IS.RUNNING).count() == 2
    assert any("Checked the moves from kvm-a; they may start" in line["msg"] for line in ev.facts_job.log)
    assert ev.facts_job.result["moves"] == 3 and ev.facts_job.result["gathered"] == 3
