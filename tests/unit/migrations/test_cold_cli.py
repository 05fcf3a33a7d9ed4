"""`manage.py vm_cold_migrate`: what it refuses and says, and that a refused command creates nothing.

Only queued requests here (no --wait): the job is replaced by a recorder, so no host is reached.
"""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from core.models import AuditEvent, Job
from hosts.choices import VMStateChoices
from migrations_app import jobs
from migrations_app.choices import ColdMigrationStatusChoices as C
from migrations_app.models import ColdMigration
from storage.choices import ShareStatusChoices
from storage.models import Share
from tests.fakes.fleet import make_host, make_vm

pytestmark = pytest.mark.django_db

HOSTILE = ["'; rm -rf /'", "<script>alert(1)</script>", "$(reboot)", "web-1; virsh destroy web-1", "../../etc/passwd"]


@pytest.fixture(autouse=True)
def job_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(jobs, "cold_migration_job", lambda job_id, cold_id: calls.append((job_id, cold_id)))
    return calls


@pytest.fixture
def hosts_and_guest(db):
    """kvm-a holds web-1 (shut off); kvm-b is another host; kvm-c exports /srv/vm, mounted by kvm-a and kvm-b."""
    src, dst, third = make_host("kvm-a"), make_host("kvm-b"), make_host("kvm-c")
    vm = make_vm(src, "web-1", state=VMStateChoices.SHUTOFF, state_reason="shutdown")
    share = Share.objects.create(server=third, export_path="/srv/vm", mount_path="/mnt/vm",
                                 status=ShareStatusChoices.READY)
    share.clients.add(src, dst)
    return src, dst, third, vm, share


def run(*args) -> str:
    out = io.StringIO()
    call_command("vm_cold_migrate", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def assert_nothing_created():
    assert not ColdMigration.objects.exists()
    assert not Job.objects.exists()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope", "--to", "kvm-b"], "No guest 'nope' in the inventory"),
        (["web-1", "--to", "nowhere"], "No host 'nowhere' in the inventory (hosts: kvm-a, kvm-b, kvm-c)"),
        (["web-1", "--to", "kvm-b", "--storage", "99"], "No share '99'. Shares: kvm-c:/srv/vm."),
        (["web-1", "--to", "kvm-b", "--storage", "kvm-c:/srv/other"], "No share 'kvm-c:/srv/other'"),
        (["web-1", "--to", "kvm-b", "--storage", "kvm-z:/srv/vm"], "No share 'kvm-z:/srv/vm'"),
        (["web-1", "--to", "kvm-b", "--storage", "/srv/vm"], "No share '/srv/vm'"),  # the server is needed
        (["web-1", "--to", "kvm-b", "--storage", "kvm-c"], "Give its id or SERVER:/export"),
    ],
)
def test_unknown_names_are_errors_that_create_nothing(hosts_and_guest, args, message):
    with pytest.raises(CommandError) as error:
        run(*args)
    assert message in str(error.value)
    assert_nothing_created()
    assert not AuditEvent.objects.exists()  # nothing was asked of the service


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("position", ["vm", "--to", "--storage"])
def test_hostile_text_in_any_argument_is_an_error_that_creates_nothing(hosts_and_guest, text, position):
    args = {"vm": [text, "--to", "kvm-b"], "--to": ["web-1", "--to", text],
            "--storage": ["web-1", "--to", "kvm-b", "--storage", text]}[position]
    with pytest.raises(CommandError, match=r"^No (guest|host|share) "):
        run(*args)
    assert_nothing_created()
    assert not AuditEvent.objects.exists()


def test_control_characters_in_a_name_do_not_reach_the_terminal(hosts_and_guest):
    with pytest.raises(CommandError) as error:
        run("web-1\x1b]0;owned\x07\x1b[2J", "--to", "kvm-b")
    text = str(error.value)
    assert "\x1b" not in text and "\x07" not in text
    assert "No guest" in text and "owned" in text
    assert_nothing_created()


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda vm, share: type(vm).objects.filter(pk=vm.pk).update(state=VMStateChoices.RUNNING),
         ["web-1", "--to", "kvm-b"],
         "web-1 is running; a cold migration moves a shut-off guest. Shut it down from its page first"),
        (None, ["web-1", "--to", "kvm-a"], "nothing would move. Choose a share"),
        (lambda vm, share: share.clients.remove(share.clients.get(name="kvm-b")),
         ["web-1", "--to", "kvm-b", "--storage", "kvm-c:/srv/vm"], "kvm-b does not mount the share kvm-c:/srv/vm."),
    ],
)
def test_a_refusal_is_an_error_with_its_hint_and_is_audited(hosts_and_guest, setup, args, message):
    _src, _dst, _third, vm, share = hosts_and_guest
    if setup is not None:
        setup(vm, share)
    with pytest.raises(CommandError) as error:
        run(*args)
    assert message in str(error.value)
    assert_nothing_created()
    assert AuditEvent.objects.get(action="migration.cold.request").result == "refused"


# --------------------------------------------------------------------------- accepted (the errors above mean something)


def test_queued_for_a_worker(hosts_and_guest):
    _src, dst, _third, vm, _share = hosts_and_guest
    out = run("web-1", "--to", "KVM-B", "--start")
    cold = ColdMigration.objects.get()
    assert (cold.status, cold.destination, cold.start, cold.run_by_worker) == (C.QUEUED, dst, True, True)
    url = reverse("migrations_app:cold_detail", args=[cold.pk])
    assert f"Cold migration #{cold.pk} of web-1 queued. Follow it at {url}" in out
    assert AuditEvent.objects.get(action="migration.cold.request").result == "ok"


@pytest.mark.parametrize("storage", ["SHARE_ID", "kvm-c:/srv/vm", "KVM-C:/srv/vm"])
def test_share_by_id_or_by_server_and_export_as_json(hosts_and_guest, storage):
    src, _dst, _third, vm, share = hosts_and_guest
    storage = str(share.pk) if storage == "SHARE_ID" else storage
    data = json.loads(run(str(vm.uuid), "--to", "kvm-a", "--storage", storage, "--json"))
    cold = ColdMigration.objects.get()
    assert cold.share == share and cold.same_host
    assert data["id"] == cold.pk and data["share"] == "kvm-c:/srv/vm" and data["status"] == "queued"
    assert data["source"] == data["destination"] == "kvm-a" and data["vm_uuid"] == str(vm.uuid)
