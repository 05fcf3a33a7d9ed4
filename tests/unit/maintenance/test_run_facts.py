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
