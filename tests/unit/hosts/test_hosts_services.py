"""Inventory services: secrets encrypted, audit in the same transaction, trust flow, sync."""

import pytest

from core.actors import Actor
from core.audit import REDACTED
from core.choices import AuditResultChoices, JobStatusChoices
from core.encryption import decrypt_secret
from core.models import AuditEvent, Job
from hosts import services
from hosts.choices import DiskStorageChoices, HostAuthMethodChoices, HostJobKindChoices, HostStatusChoices
from hosts.models import Host, PortalKey, VirtualMachine

from tests.fakes.fleet import make_domain

pytestmark = pytest.mark.django_db


def connection(**kw):
    defaults = dict(address="192.0.2.20", ssh_port=22, ssh_user="root", auth_method=HostAuthMethodChoices.PASSWORD, password="s3cret!")
    defaults.update(kw)
    return services.HostConnection(**defaults)


def test_host_create_encrypts_secret_and_audits_redacted(fleet, django_capture_on_commit_callbacks):
    fleet.add("host-192.0.2.20", address="192.0.2.20")
    with django_capture_on_commit_callbacks(execute=True):
        host, job = services.host_create(name="kvm-b", connection=connection(), actor=Actor.system())
    host.refresh_from_db()
    assert "s3cret!" not in host.secret_encrypted
    assert decrypt_secret(host.secret_encrypted) == "s3cret!"
    assert host.status == HostStatusChoices.PENDING_TRUST and not host.host_key
    event = AuditEvent.objects.get(action="host.add")
    assert event.parameters["password"] == REDACTED
    assert "s3cret!" not in str(event.parameters)
    # The fetch-key job ran (inline in tests) and left the presented key for the admin.
    job.refresh_from_db()
    assert job.kind == HostJobKindChoices.FETCH_HOST_KEY and job.status == JobStatusChoices.SUCCEEDED
    assert host.presented_host_key_fingerprint == fleet["192.0.2.20"].host_key.fingerprint


def test_host_create_rejects_duplicate_name_case_insensitively(fleet):
    services.host_create(name="kvm-b", connection=connection(), actor=Actor.system())
    with pytest.raises(services.ServiceRefused):
        services.host_create(name="KVM-B", connection=connection(address="192.0.2.21"), actor=Actor.system())


def test_failed_create_leaves_no_audit_row(fleet):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.host_create(name="bad name", connection=connection(), actor=Actor.system())
    assert not AuditEvent.objects.filter(action="host.add").exists()
    assert not Host.objects.exists()


def test_portal_key_generated_once_and_encrypted():
    first = services.portal_key_get_or_create(actor=Actor.system())
    second = services.portal_key_get_or_create(actor=Actor.system())
    assert first.pk == second.pk and PortalKey.objects.count() == 1
    assert first.public_key.startswith("ssh-ed25519 ")
    assert "PRIVATE KEY" in decrypt_secret(first.private_key_encrypted)
    assert "PRIVATE KEY" not in first.private_key_encrypted
    assert AuditEvent.objects.filter(action="portal_key.generate").count() == 1


def test_trust_pins_presented_key_and_refreshes(fleet, django_capture_on_commit_callbacks):
    hv = fleet.add("host-192.0.2.20", address="192.0.2.20", domains=[make_domain("web")])
    with django_capture_on_commit_callbacks(execute=True):
        host, _ = services.host_create(name="kvm-b", connection=connection(), actor=Actor.system())
    host.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        job = services.host_key_trust(host=host, fingerprint=hv.host_key.fingerprint, actor=Actor.system())
    host.refresh_from_db()
    assert host.host_key == hv.host_key.openssh and host.host_key_fingerprint == hv.host_key.fingerprint
    assert not host.presented_host_key
    job.refresh_from_db()
    assert job.kind == HostJobKindChoices.REFRESH and job.status == JobStatusChoices.SUCCEEDED
    assert host.status == HostStatusChoices.REACHABLE
    assert list(host.vms.values_list("name", flat=True)) == ["web"]


def test_trust_refuses_a_fingerprint_that_was_not_presented(fleet, django_capture_on_commit_callbacks):
    fleet.add("host-192.0.2.20", address="192.0.2.20")
    with django_capture_on_commit_callbacks(execute=True):
        host, _ = services.host_create(name="kvm-b", connection=connection(), actor=Actor.system())
    with pytest.raises(services.ServiceRefused):
        services.host_key_trust(host=host, fingerprint="SHA256:somethingelse", actor=Actor.system())
    host.refresh_from_db()
    assert not host.host_key
    assert AuditEvent.objects.get(action="host.trust_key").result == AuditResultChoices.REFUSED


def test_refresh_request_coalesces_queued_jobs(trusted_host, settings):
    settings.VMPORTAL_JOBS_INLINE = False  # on_commit callbacks are not run here anyway
    first = services.host_refresh_request(host=trusted_host, actor=Actor.system())
    second = services.host_refresh_request(host=trusted_host, actor=Actor.system())
    assert first.pk == second.pk
    assert Job.objects.filter(kind=HostJobKindChoices.REFRESH, status=JobStatusChoices.QUEUED).count() == 1


def test_refresh_request_skips_untrusted_hosts(fleet):
    fleet.add("host-192.0.2.20", address="192.0.2.20")
    host, _ = services.host_create(name="kvm-b", connection=connection(), actor=Actor.system())
    assert services.host_refresh_request(host=host, actor=Actor.system()) is None


def test_inventory_save_adds_updates_and_removes_guests(trusted_host, fleet):
    hv = fleet[trusted_host.address]
    assert set(trusted_host.vms.values_list("name", flat=True)) == {"web-1", "db-1"}
    web = next(d for d in hv.domains.values() if d.name == "web-1")
    db = next(d for d in hv.domains.values() if d.name == "db-1")
    del hv.domains[db.uuid]
    hv.set_state(web.uuid, "paused", "user")
    new = make_domain("cache-1", disks=[])
    summary = services.host_inventory_save(
        host=trusted_host, facts=hv.facts, os_release=None, domains=[hv.domains[web.uuid], new], storage={},
        actor=Actor.system(),
    )
    assert summary == {"vms": 2, "added": 1, "removed": 1}
    vms = {vm.name: vm for vm in trusted_host.vms.all()}
    assert set(vms) == {"web-1", "cache-1"}
    assert (vms["web-1"].state, vms["web-1"].state_reason) == ("paused", "user")
    # Facts kept the OS name from the first refresh when os-release was unavailable.
    assert trusted_host.facts.os_pretty_name.startswith("Debian")


def test_disks_and_nics_are_stored_with_storage_kind(trusted_host):
    vm = VirtualMachine.objects.get(name="web-1")
    disk = vm.disks.get()
    assert (disk.target, disk.format, disk.readonly) == ("vda", "raw", True)
    assert disk.storage == DiskStorageChoices.LOCAL and disk.storage_fstype == "ext4"
    assert vm.nics.get().mac == "52:54:00:00:00:01"


def test_network_disk_is_marked_network(trusted_host, fleet):
    from hosts.adapters.libvirt import DiskInfo

    hv = fleet[trusted_host.address]
    dom = make_domain("nfs-guest", disks=[DiskInfo("vda", "disk", "network", "/export/x.qcow2", "nfs", "qcow2", False, False)])
    services.host_inventory_save(host=trusted_host, facts=hv.facts, os_release=None, domains=[dom], storage={}, actor=Actor.system())
    assert VirtualMachine.objects.get(name="nfs-guest").disks.get().storage == DiskStorageChoices.NETWORK


def test_contact_failure_audited_once_per_transition(trusted_host):
    for _ in range(3):
        services.host_contact_failed(host=trusted_host, error="down", hint="start it", actor=Actor.system())
    trusted_host.refresh_from_db()
    assert trusted_host.status == HostStatusChoices.UNREACHABLE and trusted_host.last_error == "down"
    assert AuditEvent.objects.filter(action="host.unreachable").count() == 1


def test_vm_action_refused_in_wrong_state_and_audited(trusted_host):
    vm = VirtualMachine.objects.get(name="db-1")  # shut off
    with pytest.raises(services.ServiceRefused):
        services.vm_action_request(vm=vm, action="shutdown", actor=Actor.system())
    event = AuditEvent.objects.get(action="vm.shutdown")
    assert event.result == AuditResultChoices.REFUSED
    assert not Job.objects.filter(kind="vm.shutdown").exists()


def test_vm_action_refused_when_host_key_mismatched(trusted_host):
    Host.objects.filter(pk=trusted_host.pk).update(status=HostStatusChoices.KEY_MISMATCH)
    vm = VirtualMachine.objects.get(name="web-1")
    with pytest.raises(services.ServiceRefused):
        services.vm_action_request(vm=vm, action="destroy", actor=Actor.system())


def _writes(queries, table):
    return [q["sql"] for q in queries if q["sql"].split(" ", 1)[0] in ("INSERT", "UPDATE", "DELETE")
            and f'"{table}"' in q["sql"]]


def test_a_refresh_that_changes_nothing_writes_no_guest_or_nic_row(trusted_host, fleet):
    from dataclasses import replace

    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from hosts.models import VirtualNic

    hv = fleet[trusted_host.address]
    domains = [replace(d, definition_xml=f"<domain><name>{d.name}</name></domain>") for d in hv.domains.values()]
    services.host_inventory_save(host=trusted_host, facts=hv.facts, os_release=None, domains=domains, storage={},
                                 actor=Actor.system())
    stored = dict(VirtualMachine.objects.values_list("name", "definition_encrypted"))
    nic_ids = set(VirtualNic.objects.values_list("pk", flat=True))
    before = dict(VirtualMachine.objects.values_list("name", "updated"))

    with CaptureQueriesContext(db) as queries:
        services.host_inventory_save(host=trusted_host, facts=hv.facts, os_release=None, domains=domains,
                                     storage={}, actor=Actor.system())
    guest_writes = _writes(queries.captured_queries, "hosts_virtualmachine")
    assert len(guest_writes) == 1 and '"updated"' in guest_writes[0]  # only "seen now", one statement
    assert _writes(queries.captured_queries, "hosts_virtualnic") == []
    assert dict(VirtualMachine.objects.values_list("name", "definition_encrypted")) == stored  # not re-encrypted
    assert set(VirtualNic.objects.values_list("pk", flat=True)) == nic_ids
    after = dict(VirtualMachine.objects.values_list("name", "updated"))
    assert all(after[name] > before[name] for name in before)

    # what changed is written: a new name, a NIC's network, a new definition
    web = next(d for d in domains if d.name == "web-1")
    nic = replace(web.nics[0], source="lan2")
    changed = replace(web, name="web-1-renamed", nics=[nic], definition_xml="<domain><name>web-1-renamed</name></domain>")
    rest = [d for d in domains if d is not web]
    services.host_inventory_save(host=trusted_host, facts=hv.facts, os_release=None, domains=[changed, *rest],
                                 storage={}, actor=Actor.system())
    vm = VirtualMachine.objects.get(uuid=web.uuid)
    assert vm.name == "web-1-renamed" and list(vm.nics.values_list("source", flat=True)) == ["lan2"]
    assert decrypt_secret(vm.definition_encrypted) == changed.definition_xml
    other = VirtualMachine.objects.get(name="db-1")
    assert other.definition_encrypted == stored["db-1"]
