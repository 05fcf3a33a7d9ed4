"""Host groups narrow what a user sees and may choose: lists of records, their pages, the wizards'
destinations, evacuation plans, the fleet page, jobs; services and commands (``--as``) refuse a
requester outside the hosts' groups, and the OS user keeps full rights.

"ann" holds Operator on team-a (kvm-a, kvm-a2) only; kvm-b is in team-b.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.actors import Actor
from core.choices import RoleChoices
from core.models import AuditEvent, Job
from hosts.models import Host, HostGroup, HostGroupGrant, VirtualMachine
from hosts.permissions import hosts_for, records_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def teams(fleet):
    rows = {}
    for name, group in (("kvm-a", "team-a"), ("kvm-a2", "team-a"), ("kvm-b", "team-b")):
        fleet.add(name)
        host = fleet.host_row(name)
        HostGroup.objects.get_or_create(name=group)[0].hosts.add(host)
        VirtualMachine.objects.create(host=host, uuid=uuid.uuid4(), name=f"guest-{name}", state="running",
                                      memory_kib=65536)
        rows[name] = host
    ann = get_user_model().objects.create_user("ann", password="x-long-pass-9")
    HostGroupGrant.objects.create(group=HostGroup.objects.get(name="team-a"), user=ann, role="Operator")
    rows["ann"] = ann
    client = Client()
    client.force_login(ann)
    rows["client"] = client
    return rows


def _records_on(host):
    """One record of each kind on ``host``, labelled with its name; returns their page URLs."""
    from calendar_app.models import MaintenanceWindow
    from guest_state.models import SavedState
    from maintenance.models import Evacuation
    from migrations_app.models import ColdMigration, Migration
    from storage.models import Share

    vm = host.vms.first()
    migration = Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=f"moved-{host.name}", source=host,
                                         destination=host, options={})
    cold = ColdMigration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=f"cold-{host.name}", source=host,
                                        destination=host)
    evacuation = Evacuation.objects.create(host=host, requested_by_label=f"evac-{host.name}")
    state = SavedState.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=f"saved-{host.name}", host=host,
                                      path="/srv/s.state")
    start = timezone.now() + timedelta(days=2)
    window = MaintenanceWindow.objects.create(title=f"window-{host.name}", start=start, end=start + timedelta(hours=1))
    window.hosts.add(host)
    share = Share.objects.create(server=host, export_path=f"/srv/export-{host.name}", mount_path="/mnt/x")
    job = Job.objects.create(kind="test", timeout_s=10, target_type="host", target_id=str(host.pk),
                             target_label=f"job-{host.name}")
    return {
        "migrations_app:migration_detail": migration.pk, "migrations_app:cold_detail": cold.pk,
        "maintenance:evacuation_detail": evacuation.pk, "guest_state:detail": state.pk,
        "calendar_app:window_detail": window.pk, "calendar_app:window_ics": window.pk,
        "storage:share_detail": share.pk, "core:job_detail": job.pk,
    }


LISTS = {
    "migrations_app:migration_list": ("moved-", "cold-"), "maintenance:evacuation_list": ("evac-",),
    "guest_state:list": ("saved-",), "storage:share_list": ("/srv/export-",), "core:job_list": ("job-",),
    "calendar_app:calendar": ("window-",),
}


@pytest.mark.parametrize("name", sorted(LISTS))
def test_lists_show_only_records_of_the_users_hosts(teams, name):
    _records_on(teams["kvm-a"])
    _records_on(teams["kvm-b"])
    page = teams["client"].get(reverse(name)).content.decode()
    for label in LISTS[name]:
        assert f"{label}kvm-a" in page and f"{label}kvm-b" not in page, label


def test_the_calendar_feed_and_events_show_only_windows_of_the_users_hosts(teams):
    _records_on(teams["kvm-a"])
    _records_on(teams["kvm-b"])
    events = teams["client"].get(reverse("calendar_app:events")).json()
    assert any(e["title"].startswith("window-kvm-a") for e in events)
    assert not any("kvm-b" in e["title"] for e in events)


def test_record_pages_outside_the_users_groups_are_403(teams):
    mine, theirs = _records_on(teams["kvm-a"]), _records_on(teams["kvm-b"])
    client = teams["client"]
    for name in mine:
        assert client.get(reverse(name, args=[mine[name]])).status_code == 200, name
        assert client.get(reverse(name, args=[theirs[name]])).status_code == 403, name


def test_records_for_needs_every_host_a_record_names(teams):
    from migrations_app.models import Migration

    vm = teams["kvm-a"].vms.first()
    across = Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name="x", source=teams["kvm-a"],
                                      destination=teams["kvm-b"], options={})
    inside = Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name="y", source=teams["kvm-a"],
                                      destination=teams["kvm-a2"], options={})
    assert list(records_for(teams["ann"], RoleChoices.VIEWER, Migration.objects.all())) == [inside]
    root = get_user_model().objects.create_superuser("root", "", "x-long-pass-9")
    assert across in records_for(root, RoleChoices.ADMIN, Migration.objects.all())


def test_the_live_wizard_checks_only_destinations_of_the_users_groups(teams):
    from migrations_app.models import MigrationPlan

    vm = teams["kvm-a"].vms.first()
    response = teams["client"].post(reverse("migrations_app:wizard", args=[vm.pk]), {
        "mode": "live", "transport": "p2p", "persist_destination": "on", "undefine_source": "on",
        "timeout_action": "abort"})
    assert response.status_code == 302, response.content.decode()[:2000]
    plan = MigrationPlan.objects.get()
    assert set(plan.runs.values_list("destination__name", flat=True)) == {"kvm-a2"}


def test_the_cold_wizard_offers_only_destinations_of_the_users_groups(teams):
    vm = teams["kvm-a"].vms.first()
    form = teams["client"].get(reverse("migrations_app:cold_new", args=[vm.pk])).context["form"]
    assert set(form.fields["destination"].queryset.values_list("name", flat=True)) == {"kvm-a", "kvm-a2"}


def test_the_evacuation_plan_sends_guests_only_to_the_users_hosts(teams, monkeypatch):
    from maintenance import planning, views

    seen = []

    def make_plan(*, host, **choices):
        seen.append(set(choices["candidates"].values_list("name", flat=True)))
        return planning.evacuation_plan(host=host, check_hosts=False, **choices)

    monkeypatch.setattr(views, "make_plan", make_plan)
    response = teams["client"].get(reverse("maintenance:plan", args=[teams["kvm-a"].pk]))
    assert response.status_code == 200
    assert seen == [{"kvm-a", "kvm-a2"}]
    page = response.content.decode()
    assert '<option value="kvm-a2">' in page and '<option value="kvm-b">' not in page


def test_the_fleet_page_judges_only_the_users_hosts(teams):
    context = teams["client"].get(reverse("fleet:fleet")).context
    assert {h.name for h in context["hosts"]} == {"kvm-a", "kvm-a2"}


def test_services_refuse_a_requester_outside_the_hosts_groups(teams):
    from migrations_app.options import MigrationOptions
    from migrations_app.services import live
    from migrations_app.services.refusals import ServiceRefused

    vm = teams["kvm-a"].vms.first()
    with pytest.raises(ServiceRefused, match="does not hold the Operator role on kvm-b"):
        live.migration_request(vm=vm, destination=teams["kvm-b"], options=MigrationOptions(),
                               actor=Actor(user=teams["ann"]))
    assert AuditEvent.objects.filter(actor_label="ann", result="refused").exists()


@pytest.mark.parametrize("argv", [
    ["vm_migrate", "guest-kvm-b", "--to", "kvm-a"],
    ["vm_cold_migrate", "guest-kvm-b", "--to", "kvm-a"],
    ["vm_save", "guest-kvm-b", "--to", "/srv/states"],
    ["host_maintenance", "kvm-b", "enter"],
    ["maintenance_window", "add", "--title", "t", "--hosts", "kvm-b", "--start", "2031-01-04T02:00Z",
     "--end", "2031-01-04T03:00Z"],
    ["nfs_setup", "--server", "kvm-b", "--export", "/srv/x", "--clients", "kvm-b", "--mount", "/mnt/x"],
], ids=lambda argv: argv[0])
def test_commands_with_as_act_within_the_users_rights(teams, argv):
    where = argv.index("--as") if "--as" in argv else len(argv)
    with pytest.raises(CommandError, match="does not hold the .* role on kvm-b"):
        call_command(*argv[:where], "--as", "ann", *argv[where:])
    assert AuditEvent.objects.filter(action="command.refused", actor_label="ann").exists()


def test_a_command_without_as_runs_as_the_os_user_with_full_rights(teams):
    call_command("maintenance_window", "add", "--title", "t", "--hosts", "kvm-b", "--start", "2031-01-04T02:00Z",
                 "--end", "2031-01-04T03:00Z")
    event = AuditEvent.objects.filter(action__startswith="window.").latest("pk")
    assert event.actor_label.startswith("cli:")


def test_a_command_with_as_runs_as_the_user_inside_their_groups(teams):
    call_command("maintenance_window", "add", "--title", "t", "--hosts", "kvm-a", "--start", "2031-01-04T02:00Z",
                 "--end", "2031-01-04T03:00Z", "--as", "ann")
    assert AuditEvent.objects.filter(action__startswith="window.").latest("pk").actor_label == "ann"


def test_vm_list_with_as_lists_only_the_guests_of_the_users_hosts(teams, capsys):
    import json

    call_command("vm_list", "--json", "--as", "ann")
    assert sorted(row["name"] for row in json.loads(capsys.readouterr().out)) == ["guest-kvm-a", "guest-kvm-a2"]
    call_command("vm_list", "--as", "ann")
    table = capsys.readouterr().out
    assert "guest-kvm-a2" in table and "guest-kvm-b" not in table
    call_command("vm_list", "--json")  # the OS user sees every guest
    assert len(json.loads(capsys.readouterr().out)) == 3
    with pytest.raises(CommandError, match="No active user named 'nobody'"):
        call_command("vm_list", "--as", "nobody")


def test_vm_list_json_gives_every_guest_exactly_its_own_disks_across_chunks_and_scopes(teams, capsys, monkeypatch):
    """The disks are merged from a second stream in the guests' order: same names on several
    hosts, guests without disks between guests with several, several chunks, and a user who sees
    only some hosts — each guest still gets exactly its own disks, in target order."""
    import json

    from hosts.management.commands import vm_list
    from hosts.models import VirtualDisk

    monkeypatch.setattr(vm_list, "CHUNK", 2)
    expected = {}
    for host_name in ("kvm-a", "kvm-a2", "kvm-b"):
        host = teams[host_name]
        for i, name in enumerate(("app", "bare", "db")):  # the same names on every host
            vm = VirtualMachine.objects.create(host=host, uuid=uuid.uuid4(), name=name, state="running")
            targets = [] if name == "bare" else ["vdb", "vda"][: i % 2 + 1 + (host_name == "kvm-b")]
            for target in targets:
                VirtualDisk.objects.create(vm=vm, target=target, device="disk", source_type="file",
                                           source=f"/img/{host_name}-{name}-{target}.qcow2", capacity_bytes=2**30)
            expected[(host_name, name)] = sorted(f"/img/{host_name}-{name}-{t}.qcow2" for t in targets)
        expected[(host_name, f"guest-{host_name}")] = []

    call_command("vm_list", "--json")
    rows = json.loads(capsys.readouterr().out)
    assert {(r["host"], r["name"]): [d["source"] for d in r["disks"]] for r in rows} == expected
    assert [(r["host"], r["name"]) for r in rows] == sorted(expected)
    assert all(r["disk_capacity_bytes"] == (len(r["disks"]) * 2**30 if r["disks"] else None) for r in rows)

    call_command("vm_list", "--json", "--as", "ann")
    rows = json.loads(capsys.readouterr().out)
    assert {(r["host"], r["name"]): [d["source"] for d in r["disks"]] for r in rows} == {
        key: disks for key, disks in expected.items() if key[0] != "kvm-b"}


def test_hosts_for_is_the_one_answer(teams):
    assert set(hosts_for(teams["ann"], RoleChoices.OPERATOR).values_list("name", flat=True)) == {"kvm-a", "kvm-a2"}
    assert not hosts_for(teams["ann"], RoleChoices.ADMIN).exists()
    assert Host.objects.count() == 3


def test_django_admin_is_for_superusers_only_and_says_so(teams):
    from django.contrib.auth.models import Group

    boss = get_user_model().objects.create_user("boss", password="x-long-pass-9", is_staff=True)
    boss.groups.add(Group.objects.get_or_create(name="Admin")[0])
    client = Client()
    client.force_login(boss)
    assert client.get("/admin/").status_code in (302, 403)
    root = Client()
    root.force_login(get_user_model().objects.create_superuser("root", "", "x-long-pass-9"))
    page = root.get("/admin/").content.decode()
    assert "superusers only" in page.lower()


def test_every_page_with_an_id_in_its_url_checks_its_hosts():
    """A page (GET too) that takes a record's or a host's id is host-scoped, except people and audit."""
    from django.urls import URLPattern, URLResolver, get_resolver

    from hosts.permissions import HostAccessMixin

    def walk(resolver, prefix=""):
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry, f"{prefix}{entry.namespace}:" if entry.namespace else prefix)
            elif isinstance(entry, URLPattern) and entry.name:
                yield f"{prefix}{entry.name}", entry

    unscoped = {name for name, entry in walk(get_resolver())
                if set(entry.pattern.converters) & {"pk", "host_pk", "host_id", "vm_pk"}
                and not issubclass(getattr(entry.callback, "view_class", object), HostAccessMixin)}
    # The job page checks through core's job scope (hosts.permissions.targets_for); people and the
    # audit trail are not host records.
    assert unscoped == {"core:job_detail", "core:person", "core:audit_event"}


def test_a_hosts_load_history_is_403_outside_the_users_groups(teams):
    client = teams["client"]
    assert client.get(reverse("hosts:host_load", args=[teams["kvm-a"].pk])).status_code == 200
    assert client.get(reverse("hosts:host_load", args=[teams["kvm-b"].pk])).status_code == 403


def test_the_audit_trail_shows_a_scoped_user_only_events_of_their_hosts(teams):
    from core.audit import audit_record_now
    from core.choices import AuditResultChoices

    for name in ("kvm-a", "kvm-b"):
        audit_record_now(actor=Actor.system(), action="test.mark", result=AuditResultChoices.OK,
                         target=teams[name], message=f"marked-{name}")
    client = teams["client"]
    page = client.get(reverse("core:audit")).content.decode()
    assert "marked-kvm-a" in page and "marked-kvm-b" not in page
    export = b"".join(client.get(reverse("core:audit_export", args=["jsonl"])).streaming_content).decode()
    assert "marked-kvm-a" in export and "marked-kvm-b" not in export
    theirs = AuditEvent.objects.get(message="marked-kvm-b")
    assert client.get(reverse("core:audit_event", args=[theirs.pk])).status_code == 404
