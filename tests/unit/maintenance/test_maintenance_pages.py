"""The maintenance pages: the plan (roles, choices, bad query strings, confirm, a changed plan),
the evacuation page and its controls, the exit page, the list, and the host page's banner."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.actors import Actor
from hosts.choices import VMStateChoices
from hosts.models import Host, VirtualMachine
from maintenance import planning, services, views
from maintenance.choices import EvacuationStatusChoices as ES, ItemStatusChoices as IS
from maintenance.models import Evacuation
from tests.fakes.fleet import make_vm

SYSTEM = Actor.system()


@pytest.fixture
def inventory_plans(monkeypatch):
    """Plans from the inventory (the hosts' gather is tested on its own); records every call's choices."""
    calls = []

    def make_plan(*, host, **choices):
        calls.append(choices)
        return planning.evacuation_plan(host=host, check_hosts=False, **choices)

    monkeypatch.setattr(views, "make_plan", make_plan)
    return calls


def plan_url(evac):
    return reverse("maintenance:plan", args=[evac["a"].pk])


def _uuid(evac, name):
    return str(evac[name].uuid)


# --- The plan page ----------------------------------------------------------------------------


def test_the_real_plan_page_asks_the_hosts(evac, monkeypatch):
    seen, real = {}, planning.evacuation_plan

    def evacuation_plan(**kw):
        seen.update(kw)
        return real(**{**kw, "check_hosts": False})

    monkeypatch.setattr(planning, "evacuation_plan", evacuation_plan)
    views.make_plan(host=evac["a"], concurrency=2)
    assert seen["check_hosts"] is True


def test_the_plan_page_asks_the_hosts_and_shows_each_rows_preflight(evac, viewer_client):
    html = viewer_client.get(plan_url(evac)).content.decode()  # the real gather, over the fake fleet
    assert "Planned from the inventory only" not in html
    row = re.search(r'<tr data-guest="web-1".*?</tr>\s*(?=<tr data-guest|</tbody>)', html, re.S).group(0)
    assert 'class="badge verdict-' in row and f'id="preflight-{_uuid(evac, "web-1")}"' in row


def test_viewer_sees_the_plan_with_the_blocker_but_no_forms(evac, viewer_client, inventory_plans):
    response = viewer_client.get(plan_url(evac))
    assert response.status_code == 200
    html = response.content.decode()
    assert "local-1" in html and "web-1" in html and "cold-1" in html
    blockers = re.search(r'id="plan-blockers".*?</div>', html, re.S).group(0)
    assert "local-1" in blockers and "web-1" not in blockers
    assert "<form" not in html.split('<main class="page">')[1]  # no Recalculate, no Confirm, no choices
    assert 'name="exclude"' not in html and "confirm-maintenance" not in html


def test_operator_sees_choices_and_confirm_with_the_fingerprint(evac, operator_client, inventory_plans):
    html = operator_client.get(plan_url(evac)).content.decode()
    plan = planning.evacuation_plan(host=evac["a"], check_hosts=False, concurrency=2, strategy="spread")
    assert f'name="fingerprint" value="{plan.fingerprint}"' in html
    assert 'id="recalculate"' in html and 'id="confirm-maintenance"' in html
    # The override select of a guest offers only the hosts that may take it.
    select = re.search(rf'<select name="to_{_uuid(evac, "web-1")}".*?</select>', html, re.S).group(0)
    assert set(re.findall(r'<option value="([^"]*)"', select)) == {"", "kvm-b", "kvm-c"}


def test_recalculate_applies_the_choices(evac, operator_client, inventory_plans):
    query = {"concurrency": "3", "strategy": "pack", "exclude": _uuid(evac, "web-2"),
             "shutdown": _uuid(evac, "local-1"), f"to_{_uuid(evac, 'web-1')}": "kvm-c"}
    response = operator_client.get(plan_url(evac), query)
    assert response.status_code == 200
    choices = inventory_plans[-1]
    assert choices["concurrency"] == 3 and choices["strategy"] == "pack"
    assert choices["excluded"] == [_uuid(evac, "web-2")] and choices["shutdown"] == [_uuid(evac, "local-1")]
    assert choices["overrides"] == {_uuid(evac, "web-1"): "kvm-c"}
    html = response.content.decode()
    # The confirm form carries exactly these choices.
    confirm = html[html.index('action="' + plan_url(evac) + '"'):]
    assert f'name="exclude" value="{_uuid(evac, "web-2")}"' in confirm
    assert f'name="to_{_uuid(evac, "web-1")}" value="kvm-c"' in confirm
    assert 'name="concurrency" value="3"' in confirm
    assert "Shut down, start after" in html


@pytest.mark.parametrize("query, says", [
    ({"concurrency": "9", "strategy": "spread"}, "less than or equal to 8"),
    ({"concurrency": "0", "strategy": "spread"}, "greater than or equal to 1"),
    ({"concurrency": "two", "strategy": "spread"}, "whole number"),
    ({"concurrency": "2", "strategy": "scatter"}, "valid choice"),
    ({"concurrency": "2", "exclude": "not-a-uuid"}, "valid choice"),
    ({"concurrency": "2", "exclude": str(uuid.uuid4())}, "valid choice"),
    ({"concurrency": "2", "to_OVERRIDE": "kvm-z"}, "valid choice"),
    ({"concurrency": "2", "to_OVERRIDE": "kvm-a"}, "valid choice"),  # not to the host itself
    ({"concurrency": "2", "exclude": "BOTH", "shutdown": "BOTH"}, "not both"),
    ({"concurrency": "2" * 5000}, "Guests at a time"),  # too long for int(): still a message
])
def test_bad_query_strings_say_what_is_wrong_and_show_the_default_plan(evac, operator_client, inventory_plans, query, says):
    web1 = _uuid(evac, "web-1")
    query = {k.replace("OVERRIDE", web1): (web1 if v == "BOTH" else v) for k, v in query.items()}
    response = operator_client.get(plan_url(evac), query)
    assert response.status_code == 400
    html = response.content.decode()
    assert "These choices were not used" in html and says in html
    assert inventory_plans[-1]["concurrency"] == 2 and inventory_plans[-1]["excluded"] == []
    assert "web-1" in html  # the plan with the defaults is still there


def test_unknown_override_keys_are_ignored(evac, operator_client, inventory_plans):
    response = operator_client.get(plan_url(evac), {"concurrency": "2", "strategy": "spread", "to_x": "kvm-b"})
    assert response.status_code == 200 and inventory_plans[-1]["overrides"] == {}


def test_bad_host_id_is_404(operator_client, db):
    assert operator_client.get(reverse("maintenance:plan", args=[999999])).status_code == 404
    assert operator_client.get("/maintenance/hosts/abc/enter/").status_code == 404
    assert operator_client.get(reverse("maintenance:exit", args=[999999])).status_code == 404
    assert operator_client.get(reverse("maintenance:evacuation_detail", args=[999999])).status_code == 404


def _confirm_data(evac, **extra):
    plan = planning.evacuation_plan(host=evac["a"], check_hosts=False, concurrency=2, strategy="spread")
    return {"concurrency": "2", "strategy": "spread", "fingerprint": plan.fingerprint, **extra}


def test_operator_confirms_and_lands_on_the_evacuation(evac, operator_client, inventory_plans):
    response = operator_client.post(plan_url(evac), _confirm_data(evac))
    ev = Evacuation.objects.get()
    assert response.status_code == 302 and response["Location"] == ev.get_absolute_url()
    assert Host.objects.get(pk=evac["a"].pk).in_maintenance
    assert ev.items.count() == 4 and ev.requested_by.username == "otto"


def test_viewer_cannot_confirm(evac, viewer_client, inventory_plans):
    assert viewer_client.post(plan_url(evac), _confirm_data(evac)).status_code == 403
    assert not Evacuation.objects.exists()


def test_confirm_needs_the_csrf_token(evac, operator, inventory_plans):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.post(plan_url(evac), _confirm_data(evac)).status_code == 403
    assert not Evacuation.objects.exists()


def test_a_plan_that_changed_is_refused_and_the_new_one_shown(evac, operator_client, inventory_plans):
    data = _confirm_data(evac)
    VirtualMachine.objects.filter(pk=evac["web-2"].pk).delete()  # a guest went away meanwhile
    response = operator_client.post(plan_url(evac), data)
    assert response.status_code == 409
    html = response.content.decode()
    assert "The plan changed since it was shown" in html and "Look at the new plan" in html
    new = planning.evacuation_plan(host=evac["a"], check_hosts=False, concurrency=2, strategy="spread")
    assert f'value="{new.fingerprint}"' in html and new.fingerprint != data["fingerprint"]
    assert 'data-guest="web-2"' not in html
    assert not Evacuation.objects.exists()


def test_confirm_executes_the_plan_shown_though_free_memory_moved(evac, operator_client, inventory_plans):
    from hosts.models import HostFacts

    shown = operator_client.get(plan_url(evac)).content.decode()
    data = {"concurrency": "2", "strategy": "spread"}
    import re
    data.update(dict(re.findall(r'<input type="hidden" name="((?:keep_|fingerprint)[^"]*)" value="([^"]*)"', shown)))
    assert any(k.startswith("keep_") for k in data)
    HostFacts.objects.filter(host=evac["c"]).update(memory_free_kib=7 * 1024 * 1024)  # a fresh plan would differ
    response = operator_client.post(plan_url(evac), data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    ev = Evacuation.objects.get()
    assert {i.destination.name for i in ev.items.exclude(destination=None)} == {"kvm-b"}


def test_a_kept_destination_outside_the_candidates_is_refused(evac, operator_client, inventory_plans):
    data = _confirm_data(evac, **{f"keep_{evac['web-1'].uuid}": "kvm-a"})  # the host being emptied
    response = operator_client.post(plan_url(evac), data)
    assert response.status_code == 400 and not Evacuation.objects.exists()


def test_a_malformed_confirm_starts_nothing(evac, operator_client, inventory_plans):
    response = operator_client.post(plan_url(evac), {"concurrency": "99", "fingerprint": "<script>"})
    assert response.status_code == 400
    assert "Nothing was started" in response.content.decode()
    assert not Evacuation.objects.exists()


def test_a_host_that_cannot_be_asked_gives_a_message_not_a_500(evac, operator_client, monkeypatch):
    from hosts.adapters.errors import HostUnreachable

    def make_plan(**kw):
        raise HostUnreachable("kvm-b did not answer", hint="Check that it is up.")

    monkeypatch.setattr(views, "make_plan", make_plan)
    response = operator_client.get(plan_url(evac))
    assert response.status_code == 503
    assert "Could not ask the hosts: kvm-b did not answer Check that it is up." in response.content.decode()


def test_names_are_escaped(evac, operator_client, inventory_plans):
    VirtualMachine.objects.filter(pk=evac["web-1"].pk).update(name="<b>evil</b>")
    html = operator_client.get(plan_url(evac)).content.decode()
    assert "<b>evil</b>" not in html and "&lt;b&gt;evil&lt;/b&gt;" in html


# --- The evacuation page ----------------------------------------------------------------------


def _enter(evac, capture, execute=True):
    plan = planning.evacuation_plan(host=evac["a"], check_hosts=False)
    if execute:
        with capture(execute=True):
            return services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=plan)
    return services.evacuation_enter(host=evac["a"], actor=SYSTEM, plan=plan)


def test_evacuation_page_running_then_done(evac, viewer_client, operator_client, django_capture_on_commit_callbacks, check_hosts_for_run):
    ev = _enter(evac, django_capture_on_commit_callbacks, execute=False)  # nothing ran yet
    html = operator_client.get(ev.get_absolute_url()).content.decode()
    assert 'data-evacuation-socket="/ws/evacuations/%d/"' % ev.pk in html
    assert 'id="pause-evacuation"' in html and 'id="cancel-evacuation"' in html
    assert html.count('class="item-bar"') == 3  # one bar per guest that moves
    viewer_html = viewer_client.get(ev.get_absolute_url()).content.decode()
    assert "pause-evacuation" not in viewer_html and "cancel-evacuation" not in viewer_html
    from maintenance.queue import evacuation_advance

    with django_capture_on_commit_callbacks(execute=True):
        check_hosts_for_run(ev)
        evacuation_advance(ev.pk)
    ev.refresh_from_db()
    assert ev.status == ES.INCOMPLETE
    html = viewer_client.get(reverse("maintenance:evacuation_body", args=[ev.pk])).content.decode()
    assert 'id="evacuation-outcome"' in html and "still on kvm-a" in html and "local-1" in html
    for item in ev.items.exclude(migration=None):
        assert f'href="{item.migration.get_absolute_url()}"' in html


def test_pause_resume_cancel_buttons_call_the_services(evac, operator_client, viewer_client, django_capture_on_commit_callbacks):
    ev = _enter(evac, django_capture_on_commit_callbacks, execute=False)
    url = lambda action: reverse("maintenance:evacuation_action", args=[ev.pk, action])  # noqa: E731
    assert viewer_client.post(url("pause")).status_code == 403
    assert operator_client.post(url("pause")).status_code == 302
    ev.refresh_from_db()
    assert ev.status == ES.PAUSED
    response = operator_client.post(url("pause"), follow=True)  # already paused: refused, with why
    assert "it cannot be paused now" in response.content.decode()
    operator_client.post(url("resume"))
    ev.refresh_from_db()
    assert ev.status == ES.RUNNING
    confirm = operator_client.get(url("cancel"))
    assert confirm.status_code == 200 and 'id="confirm-cancel"' in confirm.content.decode()
    assert operator_client.get(url("pause")).status_code == 404  # only Cancel asks first
    assert operator_client.post(url("explode")).status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(url("cancel"))
    ev.refresh_from_db()
    assert ev.status == ES.CANCELLED


# --- Exit ---------------------------------------------------------------------------------------


def test_exit_page_shows_the_way_home_and_brings_guests_back(evac, operator_client, viewer_client, django_capture_on_commit_callbacks):
    ev = _enter(evac, django_capture_on_commit_callbacks)
    url = reverse("maintenance:exit", args=[evac["a"].pk])
    viewer_html = viewer_client.get(url).content.decode()
    assert "web-1" in viewer_html and "exit-return" not in viewer_html
    assert viewer_client.post(url, {"bring_back": "yes"}).status_code == 403
    html = operator_client.get(url).content.decode()
    for name in ("web-1", "web-2", "cold-1"):
        assert f'data-guest="{name}"' in html
    assert "→ kvm-a" in html and 'id="exit-return"' in html and 'id="exit-stay"' in html
    assert operator_client.post(url, {"bring_back": "maybe"}).status_code == 400
    assert 'id="exit-concurrency"' in html
    refused = operator_client.post(url, {"bring_back": "yes", "concurrency": "99"})
    assert refused.status_code == 400 and not Evacuation.objects.filter(returns=ev).exists()
    assert "Guests at a time: Ensure this value is less than or equal to 8." in refused.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(url, {"bring_back": "yes", "concurrency": "3"})
    back = Evacuation.objects.get(returns=ev)
    assert back.concurrency == 3
    assert response["Location"] == back.get_absolute_url()
    back.refresh_from_db()
    assert back.status == ES.SUCCEEDED
    # Linked both ways.
    assert f'href="{ev.get_absolute_url()}"' in operator_client.get(back.get_absolute_url()).content.decode()
    assert f'href="{back.get_absolute_url()}"' in operator_client.get(ev.get_absolute_url()).content.decode()


def test_exit_shows_moved_since_as_not_touched_and_exit_without_returning(evac, operator_client, django_capture_on_commit_callbacks):
    ev = _enter(evac, django_capture_on_commit_callbacks)
    moved = ev.items.get(vm_name="web-1")
    other = "kvm-b" if moved.destination.name == "kvm-c" else "kvm-c"
    VirtualMachine.objects.filter(uuid=moved.vm_uuid).update(host=Host.objects.get(name=other))
    url = reverse("maintenance:exit", args=[evac["a"].pk])
    html = operator_client.get(url).content.decode()
    row = re.search(r'<tr data-guest="web-1".*?</tr>', html, re.S).group(0)
    assert "Not touched" in row and f"Moved to {other} since the evacuation" in row
    response = operator_client.post(url, {"bring_back": "no"})
    assert response.status_code == 302 and response["Location"] == reverse("hosts:host_detail", args=[evac["a"].pk])
    assert not Host.objects.get(pk=evac["a"].pk).in_maintenance
    again = operator_client.post(url, {"bring_back": "no"})
    assert again.status_code == 409 and "is not in maintenance" in again.content.decode()


# --- The list ----------------------------------------------------------------------------------


def test_list_newest_first_with_counts(evac, viewer_client, django_capture_on_commit_callbacks):
    ev = _enter(evac, django_capture_on_commit_callbacks)
    html = viewer_client.get(reverse("maintenance:evacuation_list")).content.decode()
    assert f'href="{ev.get_absolute_url()}"' in html and "3 / 3" in html and "Incomplete" in html
    assert 'href="/maintenance/"' in viewer_client.get(reverse("hosts:inventory")).content.decode()  # in the nav


# --- The host page ------------------------------------------------------------------------------


def _host_page(client, host):
    return client.get(reverse("hosts:host_detail", args=[host.pk])).content.decode()


def _banner(html):
    found = re.search(r'<div class="alert [^"]*" id="maintenance-banner">.*?</div>\s*(</div>)?', html, re.S)
    return found.group(0) if found else ""


def test_host_page_offers_enter_maintenance_to_operators_only(evac, operator_client, viewer_client):
    html = _host_page(operator_client, evac["a"])
    assert f'href="{reverse("maintenance:plan", args=[evac["a"].pk])}"' in html and "Enter maintenance" in html
    assert "Start maintenance" not in html  # the bare toggle is gone from the page
    assert not _banner(html)
    assert "Enter maintenance" not in _host_page(viewer_client, evac["a"])


def test_banner_while_emptying_then_not_empty_names_what_still_runs(evac, operator_client, django_capture_on_commit_callbacks, check_hosts_for_run):
    ev = _enter(evac, django_capture_on_commit_callbacks, execute=False)
    banner = _banner(_host_page(operator_client, evac["a"]))
    assert "being emptied" in banner and f'href="{ev.get_absolute_url()}"' in banner
    from maintenance.queue import evacuation_advance

    with django_capture_on_commit_callbacks(execute=True):
        check_hosts_for_run(ev)
        evacuation_advance(ev.pk)
    html = _host_page(operator_client, Host.objects.get(pk=evac["a"].pk))
    banner = _banner(html)
    assert "alert-warn" in banner and "not empty" in banner and "local-1" in banner
    assert "safe to power off" not in html
    assert "Exit maintenance" in html and "Enter maintenance" not in html


def test_banner_green_when_empty_and_in_maintenance(evac, world, operator_client, django_capture_on_commit_callbacks):
    VirtualMachine.objects.filter(pk=evac["local-1"].pk).update(state=VMStateChoices.SHUTOFF)
    world["kvm-a"].set_state(str(evac["local-1"].uuid), "shutoff", "shutdown")  # the inventory refresh agrees
    ev = _enter(evac, django_capture_on_commit_callbacks)
    ev.refresh_from_db()
    assert ev.status == ES.SUCCEEDED, ev.outcome
    host = Host.objects.get(pk=evac["a"].pk)
    banner = _banner(_host_page(operator_client, host))
    since = timezone.localtime(host.maintenance_since).strftime("%H:%M")
    assert "alert-ok" in banner
    assert f"kvm-a is empty and in maintenance since {since}</strong> — safe to power off" in banner


def test_banner_when_a_paused_guest_is_left_on_a_host_put_in_maintenance_by_the_old_switch(evac, operator_client):
    from hosts import services as host_services

    for name in ("web-1", "web-2", "local-1"):
        VirtualMachine.objects.filter(pk=evac[name].pk).update(state=VMStateChoices.SHUTOFF)
    VirtualMachine.objects.filter(pk=evac["web-2"].pk).update(state=VMStateChoices.PAUSED)
    host_services.host_maintenance_set(host=evac["a"], in_maintenance=True, actor=SYSTEM)
    banner = _banner(_host_page(operator_client, Host.objects.get(pk=evac["a"].pk)))
    assert "not empty" in banner and "web-2" in banner and "safe to power off" not in banner
    VirtualMachine.objects.filter(pk=evac["web-2"].pk).update(state=VMStateChoices.SHUTOFF)
    assert "safe to power off" in _banner(_host_page(operator_client, Host.objects.get(pk=evac["a"].pk)))


def test_banner_while_bringing_guests_home(evac, operator_client, django_capture_on_commit_callbacks):
    _enter(evac, django_capture_on_commit_callbacks)
    back = services.maintenance_exit(host=Host.objects.get(pk=evac["a"].pk), actor=SYSTEM)  # its queue has not run
    banner = _banner(_host_page(operator_client, Host.objects.get(pk=evac["a"].pk)))
    assert "Bringing guests home" in banner and f'href="{back.get_absolute_url()}"' in banner


def test_host_body_partial_carries_the_banner(evac, viewer_client, django_capture_on_commit_callbacks):
    _enter(evac, django_capture_on_commit_callbacks)
    html = viewer_client.get(reverse("hosts:host_detail_body", args=[evac["a"].pk])).content.decode()
    assert 'id="maintenance-banner"' in html


def test_a_running_rows_bar_starts_from_its_migrations_last_sample(evac, viewer_client, django_capture_on_commit_callbacks):
    from migrations_app.models import Migration, MigrationSample
    from tests.unit.migrations.test_migration_live import STATS

    ev = _enter(evac, django_capture_on_commit_callbacks, execute=False)
    item = ev.items.get(vm_name="web-1")
    migration = Migration.objects.create(vm=evac["web-1"], vm_uuid=item.vm_uuid, vm_name=item.vm_name,
                                         source=item.origin, destination=item.destination, options={},
                                         status="migrating")
    MigrationSample.objects.create(migration=migration, elapsed_ms=250, stats=STATS)  # 75% of memory sent
    type(item).objects.filter(pk=item.pk).update(status=IS.RUNNING, migration=migration)
    html = viewer_client.get(ev.get_absolute_url()).content.decode()
    row = re.search(r'<tr data-item="web-1".*?</tr>', html, re.S).group(0)
    assert f'value="75.0" data-migration="{migration.pk}"' in row and ">75%<" in row
    assert f'href="{migration.get_absolute_url()}"' in row


def test_each_row_shows_its_preflight_with_the_wizards_grid(evac, viewer_client, monkeypatch):
    import dataclasses

    from migrations_app.preflight import Verdict

    def make_plan(*, host, **choices):
        plan = planning.evacuation_plan(host=host, check_hosts=False, **choices)
        verdicts = (Verdict("cpu", "pass", "The CPU model exists there."),
                    Verdict("ports", "warn", "Port 49152 answered slowly.", fix="Check the firewall."))
        rows = tuple(dataclasses.replace(r, verdicts=verdicts) if r.name == "web-1" else r for r in plan.rows)
        return dataclasses.replace(plan, rows=rows, checked=True)

    monkeypatch.setattr(views, "make_plan", make_plan)
    html = viewer_client.get(plan_url(evac)).content.decode()
    row = re.search(r'<tr data-guest="web-1".*?</tr>\s*(?=<tr data-guest|</tbody>)', html, re.S).group(0)
    assert 'class="badge verdict-warn"' in row and "2 checks" in row
    assert f'id="preflight-{_uuid(evac, "web-1")}"' in row
    assert "Port 49152 answered slowly." in row and "Check the firewall." in row
    assert "Planned from the inventory only" not in html


def test_a_host_without_guests_enters_maintenance_from_the_same_page(evac, operator_client, inventory_plans, django_capture_on_commit_callbacks):
    empty = evac["c"]
    url = reverse("maintenance:plan", args=[empty.pk])
    html = operator_client.get(url).content.decode()
    assert "No guests on kvm-c: entering maintenance only stops new guests from arriving." in html
    fingerprint = re.search(r'name="fingerprint" value="([0-9a-f]{16})"', html).group(1)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(url, {"concurrency": "2", "strategy": "spread", "fingerprint": fingerprint})
    assert response.status_code == 302
    host = Host.objects.get(pk=empty.pk)
    assert host.in_maintenance
    assert "kvm-c is empty and in maintenance since" in _banner(_host_page(operator_client, host))
