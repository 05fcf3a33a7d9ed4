"""A host's life: edits checked before they are saved, decommission, remove (tables + services + pages)."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from core.actors import Actor
from core.audit import REDACTED
from core.choices import AuditResultChoices
from core.errors import ServiceRefused
from core.models import AuditEvent
from hosts import lifecycle, lifecycle_services
from hosts.choices import HostAuthMethodChoices, HostChangeStatusChoices, HostLifecycleChoices
from hosts.models import Host, HostChange, HostFacts, VirtualMachine
from hosts.services import HostConnection

ACTIVE, DECOM, REMOVED = HostLifecycleChoices.ACTIVE, HostLifecycleChoices.DECOMMISSIONED, HostLifecycleChoices.REMOVED


# -- pure decisions ---------------------------------------------------------------------------

@pytest.mark.parametrize("state, running, busy, refused, fix", [
    (ACTIVE, 0, 0, False, ""),
    (ACTIVE, 1, 0, True, "maintenance"),
    (ACTIVE, 3, 1, True, "maintenance"),
    (ACTIVE, 0, 1, True, ""),
    (DECOM, 0, 0, True, ""),
    (REMOVED, 0, 0, True, ""),
])
def test_decommission_refusal_table(state, running, busy, refused, fix):
    refusal = lifecycle.decommission_refusal(lifecycle=state, name="kvm-a", running_guests=running, busy_guests=busy)
    assert (refusal is not None) == refused
    if refusal:
        assert refusal.fix == fix and refusal.message and refusal.hint


@pytest.mark.parametrize("state, defined, busy, refused, fix", [
    (DECOM, 0, 0, False, ""),
    (DECOM, 2, 0, True, "refresh"),
    (DECOM, 0, 1, True, "refresh"),
    (ACTIVE, 0, 0, True, "decommission"),
    (REMOVED, 0, 0, True, ""),
])
def test_remove_refusal_table(state, defined, busy, refused, fix):
    refusal = lifecycle.remove_refusal(lifecycle=state, name="kvm-a", defined_guests=defined, busy_guests=busy)
    assert (refusal is not None) == refused
    if refusal:
        assert refusal.fix == fix


CURRENT = {"address": "10.0.0.1", "ssh_port": 22, "ssh_user": "root", "auth_method": "portal_key", "libvirt_uri": ""}


@pytest.mark.parametrize("proposed, new_secret, changed", [
    ({}, False, ()),
    (dict(CURRENT), False, ()),
    ({**CURRENT, "address": "10.0.0.2"}, False, ("address",)),
    ({**CURRENT, "ssh_port": 2222, "ssh_user": "kvm"}, False, ("ssh_port", "ssh_user")),
    (dict(CURRENT), True, ("secret",)),
    ({**CURRENT, "libvirt_uri": "qemu+tcp://10.0.0.1/system"}, False, ("libvirt_uri",)),
])
def test_connection_changes_table(proposed, new_secret, changed):
    assert lifecycle.connection_changes(CURRENT, proposed, new_secret=new_secret) == changed


def test_descriptive_changes_ignore_connection_fields():
    assert lifecycle.descriptive_changes({"name": "a", "notes": "", "tags": []},
                                         {"name": "a", "notes": "x", "tags": ["r1"], "address": "z"}) == ("notes", "tags")


# -- services over the fake fleet ----------------------------------------------------------------


def _conn(host, **kw):
    fields = dict(address=host.address, ssh_port=host.ssh_port, ssh_user=host.ssh_user,
                  auth_method=HostAuthMethodChoices(host.auth_method), libvirt_uri=host.libvirt_uri)
    fields.update(kw)
    return HostConnection(**fields)


def _edit(host, capture, **kw):
    with capture(execute=True):
        return lifecycle_services.host_edit(host=host, connection=_conn(host, **kw), name=host.name,
                                            notes=host.notes, tags=list(host.tags), actor=Actor.system())


@pytest.mark.django_db
def test_details_only_edit_is_saved_at_once_and_audited_with_old_values(trusted_host, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = lifecycle_services.host_edit(host=trusted_host, connection=_conn(trusted_host), name="kvm-a1",
                                              notes="rack 3", tags=["ssd"], actor=Actor.system())
    assert result is None
    trusted_host.refresh_from_db()
    assert (trusted_host.name, trusted_host.notes, trusted_host.tags) == ("kvm-a1", "rack 3", ["ssd"])
    event = AuditEvent.objects.get(action="host.edit")
    assert event.parameters["old"]["name"] == "kvm-a" and event.parameters["new"]["name"] == "kvm-a1"


@pytest.mark.django_db
def test_address_change_waits_for_the_fingerprint_then_logs_in_then_saves(fleet, trusted_host, private_key_pem,
                                                                          django_capture_on_commit_callbacks):
    moved = fleet.add("kvm-a-new-nic", address="192.0.2.77")
    old_fp = trusted_host.host_key_fingerprint
    change, _job = _edit(trusted_host, django_capture_on_commit_callbacks, address="192.0.2.77")
    change.refresh_from_db()
    trusted_host.refresh_from_db()
    assert change.status == HostChangeStatusChoices.AWAITING_CONFIRMATION
    assert change.presented_host_key_fingerprint == moved.host_key.fingerprint
    assert trusted_host.address == "192.0.2.10"  # nothing saved before the confirmation
    with pytest.raises(ServiceRefused):
        lifecycle_services.host_change_confirm(change=change, fingerprint=old_fp, actor=Actor.system())
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle_services.host_change_confirm(change=change, fingerprint=moved.host_key.fingerprint,
                                               actor=Actor.system())
    change.refresh_from_db()
    trusted_host.refresh_from_db()
    assert change.status == HostChangeStatusChoices.APPLIED
    assert trusted_host.address == "192.0.2.77"
    assert trusted_host.host_key_fingerprint == moved.host_key.fingerprint
    event = AuditEvent.objects.get(action="host.update", result=AuditResultChoices.OK, parameters__change=change.pk)
    assert event.parameters["old"]["address"] == "192.0.2.10"
    assert event.parameters["old"]["host_key_fingerprint"] == old_fp


@pytest.mark.django_db
def test_wrong_address_fails_and_changes_nothing(trusted_host, django_capture_on_commit_callbacks):
    before = Host.objects.values().get(pk=trusted_host.pk)
    change, _job = _edit(trusted_host, django_capture_on_commit_callbacks, address="192.0.2.201")
    change.refresh_from_db()
    assert change.status == HostChangeStatusChoices.FAILED and "refused" in change.error
    assert Host.objects.values().get(pk=trusted_host.pk) == before
    assert AuditEvent.objects.filter(action="host.change_check", result=AuditResultChoices.FAILED).exists()


@pytest.mark.django_db
def test_new_key_is_encrypted_redacted_and_login_failure_keeps_the_old_one(fleet, trusted_host, private_key_pem,
                                                                            django_capture_on_commit_callbacks):
    from hosts.adapters.errors import HostAuthError
    from hosts.adapters.ssh import generate_keypair

    new_pem, _ = generate_keypair()
    old_secret = trusted_host.secret_encrypted
    change, _ = _edit(trusted_host, django_capture_on_commit_callbacks, private_key_pem=new_pem)
    change.refresh_from_db()
    assert change.secret_encrypted and new_pem not in change.secret_encrypted
    assert "PRIVATE KEY" not in str(AuditEvent.objects.filter(action="host.change_request").values_list("parameters"))
    fleet["kvm-a"].ssh_error = HostAuthError("Permission denied (publickey).")  # the new key is refused
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle_services.host_change_confirm(change=change, fingerprint=change.presented_host_key_fingerprint,
                                               actor=Actor.system())
    change.refresh_from_db()
    trusted_host.refresh_from_db()
    assert change.status == HostChangeStatusChoices.FAILED and not change.secret_encrypted
    assert trusted_host.secret_encrypted == old_secret


@pytest.mark.django_db
def test_decommission_refused_while_a_guest_runs_then_allowed(trusted_host):
    with pytest.raises(ServiceRefused) as refused:
        lifecycle_services.host_decommission(host=trusted_host, actor=Actor.system())
    assert "Enter maintenance" in refused.value.hint
    assert AuditEvent.objects.filter(action="host.decommission", result=AuditResultChoices.REFUSED).exists()
    VirtualMachine.objects.filter(host=trusted_host).update(state="shutoff")
    host = lifecycle_services.host_decommission(host=trusted_host, actor=Actor.system())
    assert host.lifecycle == DECOM
    assert not Host.objects.filter(pk=host.pk).exists()  # out of every candidate list
    assert Host.all_objects.filter(pk=host.pk).exists()


@pytest.mark.django_db
def test_remove_needs_decommissioned_and_no_guests_and_leaves_a_tombstone(trusted_host):
    with pytest.raises(ServiceRefused):
        lifecycle_services.host_remove(host=trusted_host, actor=Actor.system())
    VirtualMachine.objects.filter(host=trusted_host).update(state="shutoff")
    lifecycle_services.host_decommission(host=trusted_host, actor=Actor.system())
    with pytest.raises(ServiceRefused):  # guests still defined
        lifecycle_services.host_remove(host=trusted_host, actor=Actor.system())
    VirtualMachine.objects.filter(host=trusted_host).delete()
    host = lifecycle_services.host_remove(host=trusted_host, actor=Actor.system())
    host = Host.all_objects.get(pk=host.pk)
    assert host.is_removed and host.removed_by_label == "system" and host.removed_at
    assert not host.secret_encrypted and not host.host_key and not HostFacts.objects.filter(host=host).exists()
    assert not host.is_connectable
    # The name is free again for a new host.
    Host.objects.create(name="kvm-a", address="192.0.2.99", auth_method="portal_key")


# -- pages ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_edit_page_and_decommission_refusal_links_to_maintenance(admin_client, trusted_host):
    page = admin_client.get(reverse("hosts:host_edit", kwargs={"pk": trusted_host.pk}))
    assert page.status_code == 200 and b'value="kvm-a"' in page.content
    page = admin_client.get(reverse("hosts:host_decommission", kwargs={"pk": trusted_host.pk}))
    assert b"Enter maintenance" in page.content
    assert reverse("maintenance:plan", kwargs={"host_id": trusted_host.pk}).encode() in page.content
    response = admin_client.post(reverse("hosts:host_decommission", kwargs={"pk": trusted_host.pk}))
    assert response.status_code == 302
    assert Host.all_objects.get(pk=trusted_host.pk).lifecycle == ACTIVE


@pytest.mark.django_db
def test_inventory_hides_decommissioned_hosts_unless_asked(admin_client, trusted_host):
    Host.objects.filter(pk=trusted_host.pk).update(lifecycle=DECOM)
    assert b"kvm-a" not in admin_client.get(reverse("hosts:inventory_tables")).content
    assert b"kvm-a" in admin_client.get(reverse("hosts:inventory_tables") + "?show=all").content
    detail = admin_client.get(reverse("hosts:host_detail", kwargs={"pk": trusted_host.pk}))
    assert detail.status_code == 200 and b"host-decommissioned" in detail.content


@pytest.mark.django_db
def test_edit_pages_need_admin(operator_client, trusted_host):
    for name in ("host_edit", "host_decommission", "host_remove"):
        assert operator_client.get(reverse(f"hosts:{name}", kwargs={"pk": trusted_host.pk})).status_code == 403
        assert operator_client.post(reverse(f"hosts:{name}", kwargs={"pk": trusted_host.pk})).status_code == 403


# -- commands ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_host_update_command_prints_fingerprint_and_stops_without_trust(fleet, trusted_host, capsys):
    moved = fleet.add("kvm-a-nic2", address="192.0.2.78")
    with pytest.raises(CommandError, match="--trust-host-key"):
        call_command("host_update", "kvm-a", "--address", "192.0.2.78")
    assert moved.host_key.fingerprint in capsys.readouterr().out
    assert Host.objects.get(pk=trusted_host.pk).address == "192.0.2.10"
    call_command("host_update", "kvm-a", "--address", "192.0.2.78", "--trust-host-key")
    host = Host.objects.get(pk=trusted_host.pk)
    assert host.address == "192.0.2.78" and host.host_key_fingerprint == moved.host_key.fingerprint
    assert AuditEvent.objects.get(action="host.update", parameters__change__isnull=False).actor_label.startswith("cli:")


@pytest.mark.django_db
def test_host_update_command_wrong_address_changes_nothing(trusted_host):
    with pytest.raises(CommandError, match="refused"):
        call_command("host_update", "kvm-a", "--address", "192.0.2.203", "--trust-host-key")
    assert Host.objects.get(pk=trusted_host.pk).address == "192.0.2.10"


@pytest.mark.django_db
def test_decommission_and_remove_commands(trusted_host):
    with pytest.raises(CommandError, match="still runs"):
        call_command("host_decommission", "kvm-a")
    VirtualMachine.objects.filter(host=trusted_host).delete()
    call_command("host_decommission", "kvm-a")
    call_command("host_remove", "kvm-a")
    assert Host.all_objects.get(pk=trusted_host.pk).is_removed
    with pytest.raises(CommandError, match="No host"):
        call_command("host_remove", "kvm-a")
