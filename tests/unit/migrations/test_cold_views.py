"""Cold-migration pages: the form from a guest's page, roles, hostile input, refusals, the page
that follows the move, and escaping of guest names everywhere they appear.

The service runs for real; its job is only enqueued (on commit, which these tests capture
without running): no worker, no hosts.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record
from core.choices import JobStatusChoices
from core.jobs import job_enqueue
from core.models import AuditEvent, Job
from hosts.choices import GuestLeaseKindChoices, HostStatusChoices, VMStateChoices
from hosts.leases import lease_claim
from migrations_app import views
from migrations_app.choices import ColdMigrationStatusChoices as C, MigrationJobKindChoices
from migrations_app.forms import OWN_STORAGE_LABEL
from migrations_app.models import ColdMigration
from migrations_app.services import refusals
from storage.choices import ShareStatusChoices
from storage.models import Share
from tests.fakes.fleet import make_host, make_vm


pytestmark = pytest.mark.django_db

HOSTILE = "<script>alert(1)</script>"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.fixture
def hosts_and_guest(db):
    """kvm-a holds a shut-off guest; kvm-b and kvm-c are other hosts."""
    src, dst, third = make_host("kvm-a"), make_host("kvm-b"), make_host("kvm-c")
    vm = make_vm(src, "web-1", state=VMStateChoices.SHUTOFF, state_reason="shutdown")
    vm.disks.create(target="vda", device="disk", source_type="file", source="/var/lib/libvirt/images/web-1.qcow2",
                    format="qcow2")
    return src, dst, third, vm


@pytest.fixture
def share(hosts_and_guest):
    """kvm-c exports /srv/vm; kvm-a and kvm-b mount it at /mnt/vm."""
    src, dst, third, _vm = hosts_and_guest
    s = Share.objects.create(server=third, export_path="/srv/vm", mount_path="/mnt/vm", status=ShareStatusChoices.READY)
    s.clients.add(src, dst)
    return s


def new_url(vm) -> str:
    return reverse("migrations_app:cold_new", args=[vm.pk])


def detail_url(cold) -> str:
    return reverse("migrations_app:cold_detail", args=[cold.pk])


def vm_page(vm) -> str:
    return reverse("hosts:vm_detail", args=[vm.host_id, vm.uuid])


def make_cold(vm, destination, *, status=C.SUCCEEDED, job_status=JobStatusChoices.SUCCEEDED, **fields) -> ColdMigration:
    """A cold-migration record as the runner leaves it, written directly (no service, no hosts)."""
    cold = ColdMigration.objects.create(
        vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=vm.host, destination=destination, status=status,
        **fields,
    )
    job = job_enqueue(kind=MigrationJobKindChoices.COLD_RUN, func=print, args=(cold.pk,), target=cold,
                      timeout_s=900, actor=Actor.system(), enqueue=False)
    Job.objects.filter(pk=job.pk).update(status=job_status, progress=40, log=[
        {"t": "2026-01-01T10:00:01+00:00", "level": "info", "msg": f"Checking {vm.name} on {vm.host.name}"},
    ])
    cold.job = job
    cold.save(update_fields=["job"])
    if cold.is_active:  # under way: it holds its guest, as one requested through the service does
        with transaction.atomic():
            lease_claim(guest_uuid=vm.uuid, guest_name=vm.name, kind=GuestLeaseKindChoices.COLD_MIGRATION,
                        owner=cold, actor=Actor.system())
    return cold


def succeeded_record(vm, destination) -> ColdMigration:
    now = timezone.now()
    return make_cold(
        vm, destination, start=True, phase="Done", started=now, ended=now, total_seconds=12.5, copy_seconds=4.0,
        bytes_total=16 * 2**20, bytes_done=16 * 2**20, reached=["copied", "defined", "undefined", "started"],
        verdicts=[
            {"check": "state", "status": "pass", "reason": f"{vm.name} is shut off and persistent.", "fix": ""},
            {"check": "storage", "status": "warn", "reason": "Could not tell the free space.",
             "fix": "Check it has at least 80 MiB free."},
        ],
        files=[{
            "kind": "disk", "target": "vda", "source_path": "/var/lib/libvirt/images/web-1.qcow2",
            "destination_path": "/var/lib/libvirt/images/web-1.qcow2",
            "write_path": "/var/lib/libvirt/images/web-1.qcow2", "route": "relay", "format": "qcow2",
            "readonly": False, "size": 16 * 2**20, "sha256": SHA, "verified": True, "copied_bytes": 16 * 2**20,
            "perm": "root:root 0600",
        }],
        summary={"files": 1, "bytes": 16 * 2**20, "copy_seconds": 4.0, "copy_mib_per_s": 4.0,
                 "originals_removed": ["/var/lib/libvirt/images/web-1.qcow2"], "originals_kept": [],
                 "started": True, "heartbeat_beats": 30},
        outcome=f"Defined on {destination.name} (running), disks: /var/lib/libvirt/images/web-1.qcow2. "
                f"Not defined on {vm.host.name} any more.",
    )


# --------------------------------------------------------------------------- the guest's page


def test_guest_page_offers_cold_migrate_to_operators_when_shut_off(hosts_and_guest, operator_client, viewer_client):
    src, dst, third, vm = hosts_and_guest
    page = operator_client.get(vm_page(vm)).content.decode()
    assert 'id="cold-migrate-button"' in page and f'href="{new_url(vm)}"' in page
    assert "move-to-share-button" not in page  # kvm-a sees no share yet
    viewer_page = viewer_client.get(vm_page(vm)).content.decode()
    assert new_url(vm) not in viewer_page and "cold-migrate-button" not in viewer_page


def test_guest_page_offers_moving_disks_onto_a_share_the_host_mounts(hosts_and_guest, share, operator_client):
    src, dst, third, vm = hosts_and_guest
    page = operator_client.get(vm_page(vm)).content.decode()
    assert f'id="move-to-share-button" href="{new_url(vm)}?to={src.pk}"' in page


def test_guest_page_says_why_cold_migrate_is_unavailable(hosts_and_guest, operator_client):
    src, dst, third, vm = hosts_and_guest
    vm.state = VMStateChoices.RUNNING
    vm.save()
    page = operator_client.get(vm_page(vm)).content.decode()
    assert 'id="cold-migrate-button" disabled' in page and new_url(vm) not in page
    assert "web-1 is running. Shut it down first" in page
    src.status = HostStatusChoices.PENDING_TRUST
    src.host_key = ""
    src.save()
    page = operator_client.get(vm_page(vm)).content.decode()
    assert "cold-migrate-button" not in page and "need kvm-a to answer" in page


def test_guest_page_links_to_an_active_cold_migration_instead(hosts_and_guest, operator_client):
    src, dst, third, vm = hosts_and_guest
    cold = make_cold(vm, dst, status=C.COPYING, job_status=JobStatusChoices.RUNNING)
    page = operator_client.get(vm_page(vm)).content.decode()
    assert f'id="cold-active" href="{detail_url(cold)}"' in page and "cold-migrate-button" not in page
    assert 'id="vm-cold-migrations"' in page


# --------------------------------------------------------------------------- roles


def test_viewer_cannot_open_the_form_nor_post(hosts_and_guest, viewer_client):
    src, dst, third, vm = hosts_and_guest
    assert viewer_client.get(new_url(vm)).status_code == 403
    assert viewer_client.post(new_url(vm), {"destination": dst.pk, "share": ""}).status_code == 403
    assert not ColdMigration.objects.exists()
    # Viewers do read the page of a cold migration, without the operator's buttons.
    cold = succeeded_record(vm, dst)
    vm.host = dst
    vm.save()
    page = viewer_client.get(detail_url(cold)).content.decode()
    assert "Cold migration #" in page and "cold-migrate-back" not in page and "cold-live-wizard" not in page


def test_anonymous_users_go_to_the_login_page(hosts_and_guest, client):
    src, dst, third, vm = hosts_and_guest
    for url in (new_url(vm), reverse("migrations_app:cold_detail", args=[1])):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]
    response = client.post(new_url(vm), {"destination": dst.pk})
    assert response.status_code == 302 and not ColdMigration.objects.exists()


# --------------------------------------------------------------------------- the form


def test_form_lists_every_host_and_share_with_what_they_mean(hosts_and_guest, share, operator_client):
    src, dst, third, vm = hosts_and_guest
    response = operator_client.get(new_url(vm))
    assert response.status_code == 200
    page = response.content.decode()
    assert "kvm-a: this host — only move its disks onto shared storage" in page
    assert "kvm-b" in page and "kvm-c" in page
    assert OWN_STORAGE_LABEL.replace("'", "&#x27;") in page
    assert "kvm-c:/srv/vm — exported by kvm-c, mounted by kvm-a, kvm-b at /mnt/vm" in page
    assert "/var/lib/libvirt/images/web-1.qcow2" in page  # the guest's disks
    assert 'id="cold-submit" disabled' not in page
    # ?to= preselects a host ("migrate back"); a bogus one is ignored.
    assert operator_client.get(f"{new_url(vm)}?to={dst.pk}").context["form"].initial["destination"] == dst.pk
    assert b"Moving web-1 back to" in operator_client.get(f"{new_url(vm)}?to={dst.pk}").content
    assert operator_client.get(f"{new_url(vm)}?to=99999").context["form"].initial["destination"] is None
    assert operator_client.get(f"{new_url(vm)}?to=<script>").status_code == 200


def test_form_on_a_running_guest_explains_and_disables_the_button(hosts_and_guest, operator_client):
    src, dst, third, vm = hosts_and_guest
    vm.state = VMStateChoices.RUNNING
    vm.save()
    page = operator_client.get(new_url(vm)).content.decode()
    assert 'id="cold-not-shut-off"' in page and "web-1 is running." in page
    assert 'id="cold-submit" disabled' in page


@pytest.mark.parametrize("data, message", [
    ({"destination": "999999", "share": ""}, "That host is not in the inventory"),
    ({"destination": "abc", "share": ""}, "That host is not in the inventory"),
    ({"destination": "1 OR 1=1", "share": ""}, "That host is not in the inventory"),
    ({"destination": "-1", "share": ""}, "That host is not in the inventory"),
    ({"share": ""}, "Choose the host the guest should be defined on."),
    ({"destination": "DST", "share": "999999"}, "That share is not in the inventory"),
    ({"destination": "DST", "share": HOSTILE}, "That share is not in the inventory"),
])
def test_hostile_ids_are_refused_with_what_to_do(hosts_and_guest, operator_client, data, message):
    src, dst, third, vm = hosts_and_guest
    data = {k: (str(dst.pk) if v == "DST" else v) for k, v in data.items()}
    response = operator_client.post(new_url(vm), data)
    assert response.status_code == 200
    page = response.content.decode()
    assert message in page and 'id="cold-errors"' in page
    assert HOSTILE not in page
    assert not ColdMigration.objects.exists()


def test_unknown_guest_is_404(operator_client, hosts_and_guest):
    assert operator_client.get(reverse("migrations_app:cold_new", args=[999999])).status_code == 404
    assert operator_client.post(reverse("migrations_app:cold_new", args=[999999]), {}).status_code == 404
    assert operator_client.get(reverse("migrations_app:cold_detail", args=[999999])).status_code == 404
    assert operator_client.get(reverse("migrations_app:cold_partial", args=[999999])).status_code == 404


def test_same_host_without_a_share_moves_nothing(hosts_and_guest, operator_client):
    src, dst, third, vm = hosts_and_guest
    response = operator_client.post(new_url(vm), {"destination": src.pk, "share": ""})
    page = response.content.decode()
    assert "web-1 is already on kvm-a" in page and "nothing would move" in page
    assert "Choose a share to move its disks onto, or another destination host." in page
    assert not ColdMigration.objects.exists()


def test_a_share_the_destination_does_not_mount_is_refused(hosts_and_guest, share, operator_client):
    src, dst, third, vm = hosts_and_guest
    share.clients.remove(dst)
    response = operator_client.post(new_url(vm), {"destination": dst.pk, "share": share.pk})
    page = response.content.decode()
    assert "kvm-b does not mount kvm-c:/srv/vm" in page and "add it as a client on the share&#x27;s page" in page
    assert not ColdMigration.objects.exists()


def test_service_refusal_is_shown_with_its_hint(hosts_and_guest, operator_client):
    """The inventory says it runs: the service refuses, audits it, and the form says why and what to do."""
    src, dst, third, vm = hosts_and_guest
    vm.state = VMStateChoices.RUNNING
    vm.save()
    response = operator_client.post(new_url(vm), {"destination": dst.pk, "share": ""})
    assert response.status_code == 200
    page = response.content.decode()
    assert "web-1 is running; a cold migration moves a shut-off guest." in page
    assert "What to do: Shut it down from its page first, or use live migration." in page
    assert not ColdMigration.objects.exists()
    refusal = AuditEvent.objects.get(action="migration.cold.request")
    assert refusal.result == "refused" and refusal.actor_label == "otto"


def test_any_refusal_reaches_the_form(hosts_and_guest, operator_client, monkeypatch):
    src, dst, third, vm = hosts_and_guest

    def refuse(**kwargs):
        raise refusals.ServiceRefused("kvm-b is in maintenance.", hint="Take it out of maintenance.")

    monkeypatch.setattr(views.cold_services, "cold_migration_request", refuse)
    page = operator_client.post(new_url(vm), {"destination": dst.pk, "share": ""}).content.decode()
    assert '<p class="error-line">kvm-b is in maintenance.</p>' in page
    assert '<p class="error-line">What to do: Take it out of maintenance.</p>' in page


def test_form_passes_the_choices_to_the_service(hosts_and_guest, share, operator_client, monkeypatch):
    src, dst, third, vm = hosts_and_guest
    asked = {}

    def request(**kwargs):
        asked.update(kwargs)
        return make_cold(vm, kwargs["destination"], status=C.QUEUED, job_status=JobStatusChoices.QUEUED)

    monkeypatch.setattr(views.cold_services, "cold_migration_request", request)
    response = operator_client.post(new_url(vm), {"destination": dst.pk, "share": share.pk, "start": "on"})
    cold = ColdMigration.objects.get()
    assert response.status_code == 302 and response["Location"] == detail_url(cold)
    assert asked["vm"] == vm and asked["destination"] == dst and asked["share"] == share
    assert asked["start"] is True and asked["keep_source"] is False
    assert asked["actor"].user.username == "otto"


def test_operator_requests_a_cold_migration(hosts_and_guest, operator_client, django_capture_on_commit_callbacks):
    src, dst, third, vm = hosts_and_guest
    # Capture the on-commit enqueue without running it: no worker in unit tests.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = operator_client.post(new_url(vm), {"destination": dst.pk, "share": "", "start": "on"})
    cold = ColdMigration.objects.get()
    assert response.status_code == 302 and response["Location"] == detail_url(cold)
    assert (cold.source, cold.destination, cold.share, cold.start, cold.keep_source) == (src, dst, None, True, False)
    assert cold.status == C.QUEUED and cold.requested_by.username == "otto"
    assert cold.job.status == JobStatusChoices.QUEUED and callbacks
    page = operator_client.get(detail_url(cold)).content.decode()
    assert f'data-live-socket="/ws/jobs/{cold.job_id}/"' in page and "data-reload-on-finish" in page
    assert "Cold-migrate web-1 from kvm-a to kvm-b requested." in page


def test_operator_moves_the_disks_onto_a_share_on_the_same_host(hosts_and_guest, share, operator_client):
    src, dst, third, vm = hosts_and_guest
    response = operator_client.post(new_url(vm), {"destination": src.pk, "share": share.pk})
    cold = ColdMigration.objects.get()
    assert response["Location"] == detail_url(cold) and cold.same_host and cold.share == share


def test_a_second_request_while_one_runs_is_refused(hosts_and_guest, operator_client):
    src, dst, third, vm = hosts_and_guest
    running = make_cold(vm, dst, status=C.COPYING, job_status=JobStatusChoices.RUNNING)
    page = operator_client.post(new_url(vm), {"destination": third.pk, "share": ""}).content.decode()
    assert f"web-1 is busy: cold migration #{running.pk} has held it since" in page
    assert f"Follow cold migration #{running.pk} at {detail_url(running)}" in page
    assert ColdMigration.objects.count() == 1


# --------------------------------------------------------------------------- the page of a move


def test_page_of_a_succeeded_move(hosts_and_guest, operator_client):
    src, dst, third, vm = hosts_and_guest
    cold = succeeded_record(vm, dst)
    vm.host = dst  # the inventory row followed the guest
    vm.save()
    page = operator_client.get(detail_url(cold)).content.decode()
    assert '<span class="badge mig-succeeded" data-cold-status>Succeeded</span>' in page
    assert 'id="cold-outcome"' in page and "Defined on kvm-b (running)" in page
    # Checks grid, files with the verified checksum and owner/mode, figures.
    assert 'id="preflight-grid"' in page and "verdict-row-warn" in page and "Check it has at least 80 MiB free." in page
    assert "data-sha-verified" in page and SHA[:16] in page and f'title="{SHA}"' in page
    assert "root:root 0600" in page and "relayed over SSH" in page
    assert "16.0 MiB" in page and "4.0 MiB/s" in page and "12.5 s" in page
    # Links: the guest, both hosts, migrate back (former source preselected), live migration.
    assert reverse("hosts:vm_detail", args=[dst.pk, vm.uuid]) in page
    assert reverse("hosts:host_detail", args=[src.pk]) in page and reverse("hosts:host_detail", args=[dst.pk]) in page
    assert f'id="cold-migrate-back" href="{new_url(vm)}?to={src.pk}"' in page
    assert f'id="cold-live-wizard" href="{reverse("migrations_app:wizard", args=[vm.pk])}"' in page
    # Finished: the log is shown but nothing follows a socket or reloads the page.
    assert "Checking web-1 on kvm-a" in page
    assert "data-live-socket" not in page and "data-reload-on-finish" not in page


def test_no_migrate_back_unless_the_guest_is_at_the_destination(hosts_and_guest, operator_client):
    src, dst, third, vm = hosts_and_guest
    cold = succeeded_record(vm, dst)  # inventory still shows it on kvm-a
    assert "cold-migrate-back" not in operator_client.get(detail_url(cold)).content.decode()


def test_page_of_a_failed_move_shows_error_hint_and_undo(hosts_and_guest, operator_client):
    src, dst, third, vm = hosts_and_guest
    cold = make_cold(
        vm, dst, status=C.NEEDS_ATTENTION, job_status=JobStatusChoices.SUCCEEDED, ended=timezone.now(),
        error="The copy of /var/lib/libvirt/images/web-1.qcow2 does not match it.",
        error_hint="The storage or the network corrupted data: check it before retrying.",
        outcome="web-1 is not defined on kvm-a.",
        rollback=[
            {"step": "power off web-1 on kvm-b", "ok": True},
            {"step": "undefine web-1 on kvm-b", "ok": None, "error": "not reachable, probably never defined there"},
            {"step": "remove the copy /var/lib/libvirt/images/web-1.qcow2 on kvm-b", "ok": False,
             "error": "could not remove it"},
        ],
        original_xml="<domain><name>web-1</name></domain>",
    )
    page = operator_client.get(detail_url(cold)).content.decode()
    assert "Needs attention:" in page and "web-1 is not defined on kvm-a." in page
    assert "does not match it" in page
    assert 'id="cold-hint"' in page and "check it before retrying" in page
    assert 'id="cold-rollback"' in page and "power off web-1 on kvm-b" in page
    assert '<span class="badge verdict-pass">done</span>' in page
    assert '<span class="badge verdict-warn">unknown</span>' in page and "probably never defined there" in page
    assert '<span class="badge verdict-fail">failed</span>' in page and "could not remove it" in page
    assert "&lt;domain&gt;&lt;name&gt;web-1" in page  # the original XML, to repair by hand
    assert "cold-migrate-back" not in page


def test_a_failed_move_offers_to_try_again(hosts_and_guest, operator_client, viewer_client):
    src, dst, third, vm = hosts_and_guest
    cold = make_cold(vm, dst, status=C.FAILED, ended=timezone.now(), total_seconds=3.2,
                     error="The guest would not start there: no network/bridge br0 on kvm-b.",
                     error_hint="Define the network (virsh net-define/net-start).",
                     outcome="web-1 is defined on kvm-a with its original disks, unchanged. Not defined on kvm-b.")
    page = operator_client.get(detail_url(cold)).content.decode()
    assert "Failed:" in page and "Where the guest is:" in page and "What to do:" in page and "after 3.2 s" in page
    assert f'id="cold-retry" href="{new_url(vm)}?to={dst.pk}"' in page
    assert "cold-retry" not in viewer_client.get(detail_url(cold)).content.decode()


def test_page_of_a_running_move_follows_its_job(hosts_and_guest, viewer_client):
    src, dst, third, vm = hosts_and_guest
    cold = make_cold(vm, dst, status=C.COPYING, job_status=JobStatusChoices.RUNNING, phase="Copying vda (1/1)",
                     bytes_total=100 * 2**20, bytes_done=25 * 2**20, started=timezone.now())
    page = viewer_client.get(detail_url(cold)).content.decode()
    partial_url = reverse("migrations_app:cold_partial", args=[cold.pk])
    assert f'data-live-socket="/ws/jobs/{cold.job_id}/" data-live-partial="{partial_url}"' in page
    assert f'data-job-socket="/ws/jobs/{cold.job_id}/" data-reload-on-finish' in page
    assert '<progress max="100" value="25" id="cold-bytes-progress"' in page
    assert "25.0 MiB of 100.0 MiB copied" in page and "Copying vda (1/1)" in page
    assert '<li class="done">Check</li>' in page and '<li class="current">Copy and verify</li>' in page
    partial = viewer_client.get(partial_url)
    assert partial.status_code == 200 and b"<html" not in partial.content
    assert b"25.0 MiB of 100.0 MiB copied" in partial.content


def test_partial_and_page_are_read_only(hosts_and_guest, operator_client):
    src, dst, third, vm = hosts_and_guest
    cold = succeeded_record(vm, dst)
    assert operator_client.post(detail_url(cold)).status_code == 405
    assert operator_client.post(reverse("migrations_app:cold_partial", args=[cold.pk])).status_code == 405


# --------------------------------------------------------------------------- history and escaping


def test_cold_migrations_are_listed_with_the_others(hosts_and_guest, viewer_client):
    src, dst, third, vm = hosts_and_guest
    cold = succeeded_record(vm, dst)
    page = viewer_client.get(reverse("migrations_app:migration_list")).content.decode()
    assert 'id="cold-migrations-table"' in page and f'href="{detail_url(cold)}">cold #{cold.pk}</a>' in page
    rows = viewer_client.get(reverse("migrations_app:cold_rows")).content.decode()
    assert f"cold #{cold.pk}" in rows and "kvm-a → kvm-b" in rows and "<html" not in rows
    job_page = viewer_client.get(reverse("core:job_detail", args=[cold.job_id])).content.decode()
    assert f'href="{detail_url(cold)}"' in job_page


def test_names_are_escaped_everywhere(hosts_and_guest, share, operator_client):
    src, dst, third, vm = hosts_and_guest
    vm.name = HOSTILE
    vm.save()
    cold = succeeded_record(vm, dst)
    cold.outcome = f"{HOSTILE} moved."
    cold.error_hint = HOSTILE
    cold.save()
    audit_record(actor=Actor(name="otto"), action="migration.cold.request", target=cold, result="ok",
                 message=f"Cold-migrate {HOSTILE}")
    pages = {
        "vm": operator_client.get(vm_page(vm)),
        "form": operator_client.get(new_url(vm)),
        "refused": operator_client.post(new_url(vm), {"destination": src.pk, "share": ""}),
        "detail": operator_client.get(detail_url(cold)),
        "partial": operator_client.get(reverse("migrations_app:cold_partial", args=[cold.pk])),
        "list": operator_client.get(reverse("migrations_app:migration_list")),
        "rows": operator_client.get(reverse("migrations_app:cold_rows")),
    }
    for name, response in pages.items():
        html = response.content.decode()
        assert response.status_code == 200, name
        assert HOSTILE not in html, name
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, name


def test_stages_of_a_running_move():
    cold = ColdMigration(status=C.DEFINING, start=False, vm_uuid=uuid.uuid4())
    assert views._cold_stages(cold) == [
        ("Waiting for a worker", "done"), ("Check", "done"), ("Copy and verify", "done"),
        ("Move the definition", "current"),
    ]
    cold.start = True
    cold.status = C.QUEUED
    assert [state for _label, state in views._cold_stages(cold)] == ["current", "", "", "", ""]
