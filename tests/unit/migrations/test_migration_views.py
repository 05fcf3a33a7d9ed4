"""Migration pages: the wizard end to end, permissions, hostile input, the live parts."""

from __future__ import annotations

import dataclasses
import json

import pytest
from django.urls import reverse

from core.actors import Actor
from core.models import AuditEvent
from migrations_app.choices import MigrationStatusChoices as S
from migrations_app.models import Migration, MigrationPlan
from migrations_app.options import MigrationOptions
from migrations_app.services import live
from tests.fakes.fleet import make_host


pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'

DEFAULT_FORM = {
    "mode": "live", "transport": "p2p", "persist_destination": "on", "undefine_source": "on",
    "timeout_action": "abort",
}


def wizard_url(vm):
    return reverse("migrations_app:wizard", args=[vm.pk])


def test_vm_page_links_to_the_wizard_for_operators_only(two_hosts, operator_client, viewer_client):
    src, dst, vm = two_hosts
    page = reverse("hosts:vm_detail", args=[src.pk, vm.uuid])
    assert wizard_url(vm) in operator_client.get(page).content.decode()
    assert wizard_url(vm) not in viewer_client.get(page).content.decode()


def test_viewer_cannot_open_the_wizard_nor_post_anything(two_hosts, viewer_client, world):
    src, dst, vm = two_hosts
    assert viewer_client.get(wizard_url(vm)).status_code == 403
    assert viewer_client.post(wizard_url(vm), DEFAULT_FORM).status_code == 403
    migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    for action in ("abort", "force-complete", "reconcile"):
        url = reverse("migrations_app:migration_action", args=[migration.pk, action])
        assert viewer_client.post(url).status_code == 403
    migration.refresh_from_db()
    assert migration.status == S.QUEUED and migration.abort_requested is None
    # Viewers do see the migration page, without the buttons.
    page = viewer_client.get(reverse("migrations_app:migration_detail", args=[migration.pk])).content.decode()
    assert "Migration #" in page and 'id="abort-migration"' not in page
    assert not MigrationPlan.objects.exists()


def test_anonymous_users_go_to_the_login_page(two_hosts, client):
    src, dst, vm = two_hosts
    response = client.get(wizard_url(vm))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_wizard_happy_path(two_hosts, world, operator_client, django_capture_on_commit_callbacks):
    src, dst, vm = two_hosts
    third = make_host("kvm-c", in_maintenance=True)
    world.adopt(third)
    page = operator_client.get(wizard_url(vm))
    assert page.status_code == 200 and b"Check destinations" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(wizard_url(vm), DEFAULT_FORM)
    plan = MigrationPlan.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("migrations_app:plan", args=[plan.pk])
    # Every other host was checked in the background (jobs run in-process in tests).
    runs = {r.destination.name: r for r in plan.runs.select_related("destination")}
    assert set(runs) == {"kvm-b", "kvm-c"}
    assert runs["kvm-b"].overall == "pass" and runs["kvm-c"].overall == "fail", [v for v in runs["kvm-b"].verdicts if v["status"] != "pass"]
    assert any(v["check"] == "capacity" and "maintenance" in v["reason"] for v in runs["kvm-c"].verdicts)
    listing = operator_client.get(reverse("migrations_app:plan", args=[plan.pk])).content.decode()
    assert listing.index('data-candidate="kvm-b"') < listing.index('data-candidate="kvm-c"')  # best first
    assert "data-pending" not in listing
    # The grid for kvm-c: failing, confirm disabled, and the service refuses a forged POST.
    grid_c = operator_client.get(reverse("migrations_app:plan_destination", args=[plan.pk, third.pk])).content.decode()
    assert 'id="confirm-migration" disabled' in grid_c and "in maintenance" in grid_c
    refused = operator_client.post(reverse("migrations_app:plan_destination", args=[plan.pk, third.pk]), follow=True)
    assert b"in maintenance" in refused.content and not Migration.objects.exists()
    # The grid for kvm-b: every check, the virsh equivalent, confirm enabled.
    grid_b = operator_client.get(reverse("migrations_app:plan_destination", args=[plan.pk, dst.pk])).content.decode()
    assert 'id="confirm-migration" disabled' not in grid_b and 'id="confirm-migration"' in grid_b
    assert "virsh -c qemu+tcp://kvm-a/system migrate --live --p2p --persistent --undefinesource" in grid_b
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("migrations_app:plan_destination", args=[plan.pk, dst.pk]))
    migration = Migration.objects.get()
    assert response["Location"] == reverse("migrations_app:migration_detail", args=[migration.pk])
    migration.refresh_from_db()
    assert migration.status == S.SUCCEEDED and migration.plan == plan
    assert migration.requested_by.username == "otto"
    page = operator_client.get(response["Location"]).content.decode()
    assert "Migrate back to kvm-a" in page and "42 ms" in page
    assert "migration.request" in page and "migration.outcome" in page  # its audit trail
    assert 'id="migration-samples"' in page


def test_migrate_back_prefills_the_options_and_goes_to_the_source(two_hosts, world, operator_client,
                                                                    django_capture_on_commit_callbacks):
    src, dst, vm = two_hosts
    options = MigrationOptions(auto_converge=True, bandwidth_mibps=64)
    with django_capture_on_commit_callbacks(execute=True):
        first = live.migration_request(vm=vm, destination=dst, options=options, actor=Actor.system())
    first.refresh_from_db()
    assert first.status == S.SUCCEEDED
    vm.refresh_from_db()
    page = operator_client.get(f"{wizard_url(vm)}?reverse={first.pk}")
    form = page.context["form"]
    assert form.initial["auto_converge"] is True and form.initial["bandwidth_mibps"] == 64
    assert form.initial["destination"] == src.pk
    assert b"Migrating back to" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            wizard_url(vm), {**DEFAULT_FORM, "auto_converge": "on", "bandwidth_mibps": "64", "destination": src.pk}
        )
    plan = MigrationPlan.objects.latest("pk")
    assert response["Location"] == reverse("migrations_app:plan_destination", args=[plan.pk, src.pk])
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(response["Location"])
    back = Migration.objects.latest("pk")
    back.refresh_from_db()
    assert back.reverses == first and back.status == S.SUCCEEDED
    assert world.where(str(vm.uuid)) == {"kvm-a": "running"}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"transport": "managed", "tunnelled": "on"}, "Tunnelled migration requires peer-to-peer"),
        ({"mode": "offline", "copy_storage": "on"}, "Offline migration cannot copy disks"),
        ({"undefine_source": "", "persist_destination": ""}, None),
        ({"persist_destination": ""}, "leaves no persistent definition"),
        ({"bandwidth_mibps": "0"}, "greater than or equal to 1"),
        ({"bandwidth_mibps": "1e3"}, "Enter a whole number"),
        ({"max_downtime_ms": "99999999"}, "less than or equal to 60000"),
        ({"timeout_action": "reboot"}, "Select a valid choice"),
        ({"mode": HOSTILE}, "Select a valid choice"),
    ],
)
def test_option_combinations_and_bad_values_are_refused_with_clear_messages(
    two_hosts, operator_client, changes, message
):
    src, dst, vm = two_hosts
    data = {**DEFAULT_FORM, **{k: v for k, v in changes.items() if v}}
    for key, value in changes.items():
        if not value:
            data.pop(key, None)
    response = operator_client.post(wizard_url(vm), data)
    if message is None:
        assert response.status_code == 302  # keeping the source definition without persisting is fine
        return
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not MigrationPlan.objects.exists()
    assert "<script>alert" not in response.content.decode()


def test_hostile_names_are_escaped_everywhere(two_hosts, world, operator_client, django_capture_on_commit_callbacks):
    src, dst, vm = two_hosts
    vm.name = HOSTILE
    vm.save()
    guests = world["kvm-a"].domains
    guests[str(vm.uuid)] = dataclasses.replace(guests[str(vm.uuid)], name=HOSTILE)
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(wizard_url(vm), DEFAULT_FORM)
    plan = MigrationPlan.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(reverse("migrations_app:plan_destination", args=[plan.pk, dst.pk]))
    migration = Migration.objects.get()
    for url in (
        wizard_url(vm),
        reverse("migrations_app:plan", args=[plan.pk]),
        reverse("migrations_app:plan_destination", args=[plan.pk, dst.pk]),
        reverse("migrations_app:migration_detail", args=[migration.pk]),
        reverse("migrations_app:migration_list"),
    ):
        body = operator_client.get(url).content.decode()
        assert "<script>alert" not in body and "<img src=x" not in body, url
        assert "&lt;script&gt;" in body, url


def test_unknown_ids_are_404(operator_client, two_hosts):
    assert operator_client.get(reverse("migrations_app:wizard", args=[999999])).status_code == 404
    assert operator_client.get(reverse("migrations_app:plan", args=[999999])).status_code == 404
    assert operator_client.get(reverse("migrations_app:migration_detail", args=[999999])).status_code == 404
    assert operator_client.get("/migrations/1/partials/evil/").status_code == 404
    src, dst, vm = two_hosts
    migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    assert operator_client.post(reverse("migrations_app:migration_action", args=[migration.pk, "reboot"])).status_code == 404
    # Odd query strings are ignored, not trusted.
    assert operator_client.get(f"{wizard_url(vm)}?reverse=1%27%20OR%201=1&plan=-5").status_code == 200


def test_actions_are_post_only(two_hosts, operator_client):
    src, dst, vm = two_hosts
    migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    assert operator_client.get(reverse("migrations_app:migration_action", args=[migration.pk, "abort"])).status_code == 405


def test_operator_aborts_a_queued_migration(two_hosts, operator_client):
    src, dst, vm = two_hosts
    migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    response = operator_client.post(reverse("migrations_app:migration_action", args=[migration.pk, "abort"]), follow=True)
    migration.refresh_from_db()
    assert migration.status == S.ABORTED
    assert b"Abort requested" in response.content
    event = AuditEvent.objects.get(action="migration.abort")
    assert event.actor_label == "otto" and event.result == "ok"
    # Aborting again is refused, and that refusal is audited too.
    response = operator_client.post(reverse("migrations_app:migration_action", args=[migration.pk, "abort"]), follow=True)
    assert b"can no longer be aborted" in response.content
    assert AuditEvent.objects.filter(action="migration.abort", result="refused").count() == 1


def test_reconcile_by_hand_only_when_it_needs_attention(two_hosts, operator_client):
    src, dst, vm = two_hosts
    migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    response = operator_client.post(reverse("migrations_app:migration_action", args=[migration.pk, "reconcile"]), follow=True)
    assert b"only one that needs attention" in response.content


def test_migration_partials_and_list(two_hosts, world, viewer_client, django_capture_on_commit_callbacks):
    src, dst, vm = two_hosts
    with django_capture_on_commit_callbacks(execute=True):
        migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    head = viewer_client.get(reverse("migrations_app:migration_part", args=[migration.pk, "head"])).content.decode()
    assert "Succeeded" in head and 'id="result-downtime"' in head
    details = viewer_client.get(reverse("migrations_app:migration_part", args=[migration.pk, "details"])).content.decode()
    assert "preflight-grid" in details
    rows = viewer_client.get(reverse("migrations_app:migration_rows")).content.decode()
    assert f"#{migration.pk}" in rows and "kvm-a → kvm-b" in rows
    page = viewer_client.get(reverse("migrations_app:migration_detail", args=[migration.pk]))
    samples = json.loads(page.content.decode().split('id="migration-samples" type="application/json">')[1].split("</script>")[0])
    assert samples and {"t", "pct", "bps", "dirty_bps", "data_remaining", "iteration"} <= set(samples[0])


def test_a_downtime_libvirt_did_not_report_is_shown_as_its_estimate_not_as_a_figure(
        two_hosts, world, viewer_client, django_capture_on_commit_callbacks):
    src, dst, vm = two_hosts
    with django_capture_on_commit_callbacks(execute=True):
        migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    part = reverse("migrations_app:migration_part", args=[migration.pk, "head"])
    Migration.objects.filter(pk=migration.pk).update(downtime_ms=None,
                                                     summary={**migration.summary, "expected_downtime_ms": 2085})
    head = viewer_client.get(part).content.decode()
    downtime = head.split('id="result-downtime">')[1].split("</dd>")[0]
    assert "not reported" in downtime and "last estimate" in downtime and "2085" not in downtime.split("<span")[0]
    Migration.objects.filter(pk=migration.pk).update(status=S.FAILED)
    downtime = viewer_client.get(part).content.decode().split('id="result-downtime">')[1].split("</dd>")[0]
    assert "none" in downtime and "no switch-over happened" in downtime


def test_the_destinations_other_guests_are_shown_escaped_with_their_verdict(
        two_hosts, world, viewer_client, django_capture_on_commit_callbacks):
    from migrations_app import impact

    src, dst, vm = two_hosts
    with django_capture_on_commit_callbacks(execute=True):
        migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    rows = [impact.Neighbour(uuid="u1", name="<img src=x onerror=alert(1)>", cpu_before_pct=60.0, cpu_during_pct=10.0,
                             steal_before_pct=1.0, steal_during_pct=2.0)]
    seen = impact.summary(rows, host=dst.name, before_s=42.0, during_s=1.5)
    Migration.objects.filter(pk=migration.pk).update(summary={**migration.summary, "neighbours": seen})
    head = viewer_client.get(reverse("migrations_app:migration_part", args=[migration.pk, "head"])).content.decode()
    block = head.split('id="result-neighbours">')[1].split("</div>")[0]
    assert "<img" not in block and "&lt;img src=x onerror=alert(1)&gt;" in block
    assert "1 of 1 other guest(s) on kvm-b were slowed" in block and "alert alert-warn" in block
    assert "60.0 %" in block and "10.0 %" in block and "42.0 s" in block
    Migration.objects.filter(pk=migration.pk).update(
        summary={**migration.summary, "neighbours": {"measured": False, "why": "no <b>answer</b>"}})
    head = viewer_client.get(reverse("migrations_app:migration_part", args=[migration.pk, "head"])).content.decode()
    assert "Not measured: no &lt;b&gt;answer&lt;/b&gt;" in head


def test_host_maintenance_toggle(two_hosts, operator_client, viewer_client):
    src, dst, vm = two_hosts
    url = reverse("hosts:host_maintenance", args=[dst.pk])
    assert viewer_client.post(url, {"in_maintenance": "on"}).status_code == 403
    operator_client.post(url, {"in_maintenance": "on"})
    dst.refresh_from_db()
    assert dst.in_maintenance
    assert AuditEvent.objects.filter(action="host.maintenance_on", target_id=str(dst.pk)).exists()
    operator_client.post(url, {"in_maintenance": HOSTILE})
    dst.refresh_from_db()
    assert dst.in_maintenance  # unchanged by nonsense
    operator_client.post(url, {"in_maintenance": "off"})
    dst.refresh_from_db()
    assert not dst.in_maintenance


def test_job_page_links_to_its_migration(two_hosts, world, operator_client, django_capture_on_commit_callbacks):
    src, dst, vm = two_hosts
    with django_capture_on_commit_callbacks(execute=True):
        migration = live.migration_request(vm=vm, destination=dst, options=MigrationOptions(), actor=Actor.system())
    migration.refresh_from_db()
    page = operator_client.get(reverse("core:job_detail", args=[migration.job_id])).content.decode()
    assert reverse("migrations_app:migration_detail", args=[migration.pk]) in page


def _flagged_run(src, dst, path="/var/lib/libvirt/images/web.qcow2"):
    from migrations_app.models import PreflightRun

    plan = MigrationPlan.objects.create(vm_uuid="6f1c8a52-0000-4000-8000-000000000001", vm_name="web", source=src,
                                        options={})
    return plan, PreflightRun.objects.create(
        plan=plan, destination=dst, status="done", overall="fail",
        verdicts=[{"check": "storage", "status": "fail", "reason": "QEMU cannot open it", "fix": "chown",
                   "repairs": [[path, "0660"]]}],
    )


def test_preflight_grid_offers_permission_repair_to_operators(two_hosts, operator_client, viewer_client,
                                                              django_capture_on_commit_callbacks, monkeypatch):
    src, dst, _vm = two_hosts
    plan, run = _flagged_run(src, dst)
    page = operator_client.get(reverse("migrations_app:plan_destination", args=[plan.pk, dst.pk])).content.decode()
    assert 'id="repair-permissions"' in page and "/var/lib/libvirt/images/web.qcow2 → mode 0660" in page
    url = reverse("migrations_app:plan_repair_permissions", args=[plan.pk, dst.pk])
    assert viewer_client.post(url).status_code == 403
    ran = []
    monkeypatch.setattr("migrations_app.jobs.image_permissions_job", lambda job_id, run_id: ran.append(run_id))
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(url)
    assert response.status_code == 302
    assert ran == [run.pk]
    event = AuditEvent.objects.get(action="image.permissions.request")
    assert event.parameters["files"] == [["/var/lib/libvirt/images/web.qcow2", "0660"]]


def test_permission_repair_with_nothing_valid_to_repair_is_refused(two_hosts, operator_client):
    src, dst, _vm = two_hosts
    plan, run = _flagged_run(src, dst, path="/etc/shadow")
    page = operator_client.get(reverse("migrations_app:plan_destination", args=[plan.pk, dst.pk])).content.decode()
    assert 'id="repair-permissions"' not in page
    response = operator_client.post(reverse("migrations_app:plan_repair_permissions", args=[plan.pk, dst.pk]),
                                    follow=True)
    assert "found no image" in response.content.decode()
    assert AuditEvent.objects.filter(action="image.permissions.request", result="refused").count() == 1
