"""The calendar's pages and the CLI: bad input refused with its message and nothing saved, viewers
read only, the drag endpoint through the same service, host page and inventory marks."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from calendar_app import services
from calendar_app.models import CalendarPreference
from calendar_app.models import MaintenanceWindow
from core.actors import Actor
from core.models import AuditEvent
from tests.fakes.fleet import make_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(db):
    return make_host("labh1"), make_host("labh2")


def local(dt) -> str:
    return timezone.localtime(dt).strftime("%Y-%m-%dT%H:%M")


def form(pair, **over):
    start = timezone.now() + timedelta(days=2)
    data = {"title": "Firmware", "hosts": [pair[0].pk], "start": local(start), "end": local(start + timedelta(hours=2)),
            "zone": "UTC", "rrule": "", "cutoff_minutes": 30, "on_start": "evacuate", "on_end": "return", "notes": ""}
    data.update(over)
    return data


def test_an_operator_creates_a_window_from_the_form(operator_client, hosts):
    page = operator_client.get("/maintenance/windows/new/?date=2031-05-03")
    assert page.status_code == 200 and 'value="2031-05-03T02:00"' in page.content.decode()
    response = operator_client.post("/maintenance/windows/new/", form(hosts, rrule="FREQ=MONTHLY;BYDAY=1SA"))
    w = MaintenanceWindow.objects.get()
    assert response.status_code == 302 and response["Location"] == w.get_absolute_url()
    assert w.rrule == "FREQ=MONTHLY;BYDAY=1SA" and list(w.hosts.all()) == [hosts[0]]
    assert AuditEvent.objects.filter(action="window.create", result="ok", target_id=str(w.pk)).exists()
    assert operator_client.get(w.get_absolute_url()).status_code == 200


BAD = [
    ("end before start", {"end": "2020-01-01T00:00"}, "end"),
    ("in the past", {"start": "2020-01-01T00:00", "end": "2020-01-01T02:00"}, "start"),
    ("rrule that does not parse", {"rrule": "FREQ=SOMETIMES"}, "rrule"),
    ("rrule with no occurrence", {"rrule": "FREQ=WEEKLY;UNTIL=20200101T000000Z"}, "rrule"),
    ("more than one a day", {"rrule": "FREQ=DAILY;BYHOUR=1,2"}, "rrule"),
    ("unknown host", {"hosts": [99999]}, "hosts"),
    ("no such zone", {"zone": "Atlantis/Capital"}, "zone"),
    ("markup in the title", {"title": "<script>alert(1)</script>"}, "title"),
    ("not a time", {"start": "tomorrow-ish"}, "start"),
    ("cutoff longer than the window", {"cutoff_minutes": 500}, "cutoff_minutes"),
]


@pytest.mark.parametrize("case,over,field", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_a_clear_message_at_its_field_and_nothing_is_saved(operator_client, hosts, case, over, field):
    response = operator_client.post("/maintenance/windows/new/", form(hosts, **over))
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors, errors
    assert MaintenanceWindow.objects.count() == 0
    assert "<script>alert" not in response.content.decode()  # escaped when shown back


def test_a_viewer_sees_the_calendar_but_cannot_create_move_or_cancel(viewer_client, hosts):
    w = services.window_create(spec=services.WindowSpec(
        title="Firmware", hosts=[hosts[0]], start=timezone.now() + timedelta(days=1),
        end=timezone.now() + timedelta(days=1, hours=2)), actor=Actor.system())
    page = viewer_client.get("/maintenance/calendar/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-can-edit=""' in body and "New window" not in body
    nonce = page.context["style_nonce"]
    assert f"style-src 'self' 'nonce-{nonce}'" in page["Content-Security-Policy"]
    assert "script-src 'self'" in page["Content-Security-Policy"]
    assert viewer_client.get("/maintenance/windows/new/").status_code == 403
    assert viewer_client.post("/maintenance/windows/new/", form(hosts)).status_code == 403
    assert viewer_client.post(f"/maintenance/windows/{w.pk}/move/", "{}", content_type="application/json").status_code == 403
    assert viewer_client.post(f"/maintenance/windows/{w.pk}/cancel/").status_code == 403
    assert "Cancel window" not in viewer_client.get(w.get_absolute_url()).content.decode()
    assert MaintenanceWindow.objects.get().cancelled is False


def test_the_events_feed_of_the_calendar_and_its_host_filter(viewer_client, hosts):
    now = timezone.now()
    for h in hosts:
        services.window_create(spec=services.WindowSpec(title=f"on {h.name}", hosts=[h], start=now + timedelta(days=1),
                                                        end=now + timedelta(days=1, hours=1)), actor=Actor.system())
    rng = {"start": (now - timedelta(days=1)).isoformat(), "end": (now + timedelta(days=30)).isoformat()}
    events = viewer_client.get("/maintenance/calendar/events.json", rng).json()
    assert sorted(e["extendedProps"]["hosts"][0] for e in events) == ["labh1", "labh2"]
    assert {e["extendedProps"]["status"] for e in events} == {"scheduled"} and all(e["editable"] for e in events)
    only = viewer_client.get("/maintenance/calendar/events.json", {**rng, "host": hosts[1].pk}).json()
    assert [e["extendedProps"]["hosts"] for e in only] == [["labh2"]]
    assert viewer_client.get("/maintenance/calendar/events.json", {"start": "x", "end": "y"}).status_code == 200


def test_drag_moves_a_window_through_the_service_and_a_bad_move_is_refused(operator_client, hosts):
    now = timezone.now()
    w = services.window_create(spec=services.WindowSpec(title="Firmware", hosts=[hosts[0]], start=now + timedelta(days=1),
                                                        end=now + timedelta(days=1, hours=2)), actor=Actor.system())
    new_start = (w.start + timedelta(days=2)).replace(microsecond=0)
    ok = operator_client.post(f"/maintenance/windows/{w.pk}/move/", json.dumps(
        {"start": new_start.isoformat(), "end": (new_start + timedelta(hours=3)).isoformat()}),
        content_type="application/json")
    assert ok.status_code == 200 and ok.json()["ok"]
    w.refresh_from_db()
    assert w.start == new_start and w.end == new_start + timedelta(hours=3) and w.sequence == 1
    bad = operator_client.post(f"/maintenance/windows/{w.pk}/move/", json.dumps(
        {"start": new_start.isoformat(), "end": (new_start - timedelta(hours=1)).isoformat()}),
        content_type="application/json")
    assert bad.status_code == 409 and "end must be after the start" in " ".join(bad.json()["errors"])
    junk = operator_client.post(f"/maintenance/windows/{w.pk}/move/", "not json", content_type="application/json")
    assert junk.status_code == 400
    w.refresh_from_db()
    assert w.start == new_start and w.sequence == 1


def test_host_page_lists_its_next_windows_and_inventory_marks_hosts_with_one_within_24h(viewer_client, hosts):
    now = timezone.now()
    services.window_create(spec=services.WindowSpec(title="Soon", hosts=[hosts[0]], start=now + timedelta(hours=3),
                                                    end=now + timedelta(hours=4)), actor=Actor.system())
    services.window_create(spec=services.WindowSpec(title="Later", hosts=[hosts[1]], start=now + timedelta(days=3),
                                                    end=now + timedelta(days=3, hours=1)), actor=Actor.system())
    host_page = viewer_client.get(f"/hosts/{hosts[1].pk}/").content.decode()
    assert 'id="host-windows"' in host_page and "Later" in host_page
    tables = viewer_client.get("/hosts/").content.decode()
    assert tables.count("occ-window-soon") == 1 and 'title="Soon:' in tables


def run(*argv) -> str:
    out = StringIO()
    call_command("maintenance_window", *argv, stdout=out)
    return out.getvalue()


def test_cli_add_list_cancel(hosts):
    start = (timezone.now() + timedelta(days=1)).replace(microsecond=0)
    made = json.loads(run("add", "--title", "Firmware", "--hosts", "labh1,labh2", "--start", start.isoformat(),
                          "--end", (start + timedelta(hours=2)).isoformat(), "--rrule", "FREQ=WEEKLY",
                          "--no-return", "--json"))
    w = MaintenanceWindow.objects.get()
    assert made["id"] == w.pk and made["uid"] == str(w.uid) and made["hosts"] == ["labh1", "labh2"]
    assert made["next"]["start"] == start.isoformat() and w.on_end == "leave"
    assert json.loads(run("list", "--json"))[0]["id"] == w.pk
    assert "Firmware" in run("list")
    assert "cancelled" in run("cancel", str(w.pk))
    assert MaintenanceWindow.objects.get().cancelled
    with pytest.raises(CommandError, match="Unknown host"):
        run("add", "--title", "x", "--hosts", "nope", "--start", start.isoformat(), "--end",
            (start + timedelta(hours=1)).isoformat())
    with pytest.raises(CommandError, match="end must be after"):
        run("add", "--title", "x", "--hosts", "labh1", "--start", start.isoformat(), "--end", start.isoformat())
    with pytest.raises(CommandError, match="no time zone"):
        run("add", "--title", "x", "--hosts", "labh1", "--start", "2031-01-01T02:00", "--end", "2031-01-01T03:00",
            "--zone", "Nowhere/Else")
    assert MaintenanceWindow.objects.count() == 1


def test_two_windows_whose_hosts_cannot_be_down_together_are_refused_with_the_numbers(world, db):
    from hosts.choices import VMStateChoices
    from hosts.models import HostFacts
    from tests.fakes.fleet import make_vm

    gib = 1024 * 1024
    a, b, c = make_host("kvm-a"), make_host("kvm-b"), make_host("kvm-c")
    for h, free in ((a, 1), (b, 1), (c, 5)):
        HostFacts.objects.update_or_create(host=h, defaults=dict(
            hostname=h.name, arch="x86_64", domain_types=["qemu", "kvm"], memory_total_kib=16 * gib,
            memory_free_kib=free * gib, cpus=8, hypervisor_version="7.2.0", libvirt_version="9.0.0"))
    make_vm(a, "big-a", state=VMStateChoices.RUNNING, memory_kib=4 * gib)
    make_vm(b, "big-b", state=VMStateChoices.RUNNING, memory_kib=4 * gib)
    now = timezone.now()
    first = services.WindowSpec(title="A", hosts=[a], start=now + timedelta(days=1), end=now + timedelta(days=1, hours=2))
    services.window_create(spec=first, actor=Actor.system())
    second = services.WindowSpec(title="B", hosts=[b], start=now + timedelta(days=1, hours=1),
                                 end=now + timedelta(days=1, hours=3))
    with pytest.raises(services.ServiceRefused) as refused:
        services.window_create(spec=second, actor=Actor.system())
    assert "find no room" in refused.value.message and "GiB short" in refused.value.message
    assert MaintenanceWindow.objects.count() == 1
    w = services.window_create(spec=second, actor=Actor.system(), confirm_at_risk=True)
    assert w.accepted_at_risk


def test_exceptions_of_a_repeating_window_from_the_form_and_the_cli(operator_client, hosts):
    start = (timezone.now() + timedelta(days=1)).replace(second=0, microsecond=0)
    skip = start + timedelta(days=7)
    bad = operator_client.post("/maintenance/windows/new/", form(
        hosts, start=local(start), end=local(start + timedelta(hours=1)), rrule="FREQ=WEEKLY",
        exdates=local(skip + timedelta(hours=1))))
    assert bad.status_code == 400 and "not the start of an occurrence" in str(bad.context["form"].errors["exdates"])
    ok = operator_client.post("/maintenance/windows/new/", form(
        hosts, start=local(start), end=local(start + timedelta(hours=1)), rrule="FREQ=WEEKLY", exdates=local(skip)))
    assert ok.status_code == 302
    assert MaintenanceWindow.objects.get().exdates == [skip.isoformat()]
    made = json.loads(run("add", "--title", "Weekly", "--hosts", "labh1", "--start", start.isoformat(), "--end",
                          (start + timedelta(hours=1)).isoformat(), "--rrule", "FREQ=WEEKLY", "--except",
                          start.isoformat(), "--json"))
    assert made["next"]["start"] == (start + timedelta(days=7)).isoformat()


def test_an_operator_cancels_a_window_from_its_page(operator_client, hosts):
    now = timezone.now()
    w = services.window_create(spec=services.WindowSpec(title="Firmware", hosts=[hosts[0]], start=now + timedelta(days=1),
                                                        end=now + timedelta(days=1, hours=2)), actor=Actor.system())
    page = operator_client.get(w.get_absolute_url()).content.decode()
    assert "Cancel window" in page and "Next occurrences" in page
    assert operator_client.post(f"/maintenance/windows/{w.pk}/cancel/").status_code == 302
    w.refresh_from_db()
    assert w.cancelled and w.sequence == 1
    assert "Cancel window" not in operator_client.get(w.get_absolute_url()).content.decode()
    assert AuditEvent.objects.filter(action="window.cancel", target_id=str(w.pk)).exists()


def test_each_person_sees_and_enters_times_in_their_own_zone(operator_client, operator, hosts):
    assert operator_client.post("/maintenance/calendar/zone/", {"zone": "Mars/Base"}).status_code == 302
    assert not CalendarPreference.objects.filter(user=operator).exists()  # refused, nothing saved
    assert operator_client.post("/maintenance/calendar/zone/", {"zone": "Europe/Berlin"}).status_code == 302
    assert services.user_zone(operator) == "Europe/Berlin"
    page = operator_client.get("/maintenance/windows/new/?date=2031-01-04")
    assert page.context["form"]["zone"].value() == "Europe/Berlin"
    assert operator_client.post("/maintenance/windows/new/", form(
        hosts, start="2031-01-04T02:00", end="2031-01-04T04:00", zone="Europe/Berlin")).status_code == 302
    w = MaintenanceWindow.objects.get()
    assert w.start.isoformat() == "2031-01-04T01:00:00+00:00"  # 02:00 CET
    events = operator_client.get("/maintenance/calendar/events.json",
                                 {"start": "2031-01-01T00:00:00Z", "end": "2031-01-10T00:00:00Z"}).json()
    assert [(e["start"], e["end"]) for e in events] == [("2031-01-04T02:00:00", "2031-01-04T04:00:00")]
    # A drag to 03:00 on the wall clock of Berlin.
    moved = operator_client.post(f"/maintenance/windows/{w.pk}/move/", json.dumps(
        {"start": "2031-01-05T03:00:00", "end": "2031-01-05T05:00:00"}), content_type="application/json")
    assert moved.status_code == 200, moved.json()
    w.refresh_from_db()
    assert w.start.isoformat() == "2031-01-05T02:00:00+00:00"
    assert "2031-01-05 03:00 CET – 2031-01-05 05:00 CET" in operator_client.get(w.get_absolute_url()).content.decode()
