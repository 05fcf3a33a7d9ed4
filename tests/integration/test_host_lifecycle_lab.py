"""A host's life against the real lab: a wrong address is caught before anything is saved,
decommissioning waits until the guests are moved, and a removed host's past migrations still
read. Jobs run in-process right after each commit (test settings), as a worker would run them.

The third lab host's guest moves to the first (as the migration lab tests do); the lab's hosts
themselves are only changed in the portal's database.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from core.choices import AuditResultChoices
from core.errors import ServiceRefused
from core.models import AuditEvent
from hosts import lifecycle_services
from hosts.choices import HostAuthMethodChoices, HostChangeStatusChoices, VM_ACTIVE_STATES
from hosts.models import Host, VirtualMachine
from hosts.services import HostConnection
from lab import config
from lab_support import SYSTEM, heartbeat_guest, refresh, vm_row
from lab_support import onboarded  # noqa: F401 - fixture used by name
from migrations_app.choices import MigrationStatusChoices as S
from migrations_app.options import MigrationOptions
from migrations_app.services import live

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

# In the lab's subnet, given to no lab host: nothing answers there.
NOBODY = f"{config.SUBNET_PREFIX}.250"


def test_a_wrong_address_fails_the_check_and_changes_nothing(lab, onboarded, django_capture_on_commit_callbacks):
    host = onboarded[lab["hosts"][0]["name"]]
    before = Host.objects.values().get(pk=host.pk)
    connection = HostConnection(address=NOBODY, ssh_port=host.ssh_port, ssh_user=host.ssh_user,
                                auth_method=HostAuthMethodChoices(host.auth_method), libvirt_uri=host.libvirt_uri)
    with django_capture_on_commit_callbacks(execute=True):
        change, _job = lifecycle_services.host_edit(host=host, connection=connection, name=host.name, notes="moved",
                                                    tags=[], actor=SYSTEM)
    change.refresh_from_db()
    assert change.status == HostChangeStatusChoices.FAILED, change.status
    assert change.error
    assert Host.objects.values().get(pk=host.pk) == before  # the notes did not go in either
    assert AuditEvent.objects.filter(action="host.change_check", result=AuditResultChoices.FAILED).exists()
    refresh(Host.objects.get(pk=host.pk))  # and the host still answers on its own settings


def test_decommission_waits_for_the_guest_then_remove_keeps_its_migrations_readable(lab, onboarded):
    src_lab, dst_lab = lab["hosts"][2], lab["hosts"][0]
    src, dst = onboarded[src_lab["name"]], onboarded[dst_lab["name"]]
    with heartbeat_guest(src_lab) as (_name, domain_uuid):
        vm = vm_row(src, domain_uuid)
        with pytest.raises(ServiceRefused) as refused:
            lifecycle_services.host_decommission(host=src, actor=SYSTEM)
        assert "Enter maintenance" in refused.value.hint
        # Move every guest off (ours and the lab's own): the lab is this module's and goes down after it.
        migrations = []
        for guest in [vm, *VirtualMachine.objects.filter(host=src, state__in=VM_ACTIVE_STATES).exclude(pk=vm.pk)]:
            with pytest.raises(ServiceRefused):
                lifecycle_services.host_decommission(host=src, actor=SYSTEM)
            migration = live.migration_request(vm=guest, destination=dst, options=MigrationOptions(), actor=SYSTEM)
            migration.refresh_from_db()
            assert migration.status == S.SUCCEEDED, (migration.error, migration.outcome)
            migrations.append(migration)
        refresh(src)
        assert not VirtualMachine.objects.filter(host=src).exists()
        host = lifecycle_services.host_decommission(host=src, actor=SYSTEM)
        assert not Host.objects.filter(pk=host.pk).exists()  # out of candidates, placement, the watcher
        lifecycle_services.host_remove(host=host, actor=SYSTEM)
        tombstone = Host.all_objects.get(pk=src.pk)
        assert tombstone.is_removed and not tombstone.host_key

        client = Client()
        client.force_login(get_user_model().objects.create_superuser("ada", password="lab-pass-1234"))
        for migration in migrations:
            page = client.get(reverse("migrations_app:migration_detail", kwargs={"pk": migration.pk}))
            assert page.status_code == 200 and src.name.encode() in page.content
        page = client.get(reverse("hosts:host_detail", kwargs={"pk": src.pk}))
        assert page.status_code == 200 and b"host-tombstone" in page.content
        assert client.get(reverse("migrations_app:migration_list")).status_code == 200
