"""Every list page runs as many queries with 1,000 rows as with 10 (tests/query_counts.py).

Rows are synthetic and written in bulk: hosts on loopback addresses (never contacted), their
guests, and what each page lists, each row pointing at a host, a guest, a user or a job of its
own so that a lookup per row shows up as a query per row.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from core.models import AuditEvent, Job
from hosts.models import Host, HostFacts, VirtualDisk, VirtualMachine
from tests.query_counts import assert_constant_queries

pytestmark = pytest.mark.django_db
_serial = itertools.count(1)


def loopback(n: int) -> str:
    return f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{(n & 255) or 1}"


def hosts(n: int, *, guests: int = 0) -> list[Host]:
    """n hosts with facts (and ``guests`` guests with one disk each)."""
    now = timezone.now()
    made = Host.objects.bulk_create(
        Host(name=f"syn-{i:05d}", address=loopback(i), auth_method="portal_key", status="reachable",
             host_key="ssh-ed25519 AAAA", host_key_fingerprint="SHA256:synthetic", last_seen=now, last_checked=now,
             tags=["gpu"] if j % 3 == 0 else [])
        for j, i in enumerate(next(_serial) for _ in range(n)))
    HostFacts.objects.bulk_create(
        HostFacts(host=host, hostname=host.name, host_uuid=str(uuid.uuid4()), arch="x86_64", cpus=16,
                  memory_total_kib=64 * 2**20, memory_free_kib=32 * 2**20, hypervisor="QEMU",
                  hypervisor_version="7.2.0", libvirt_version="9.0.0", domain_types=["qemu", "kvm"])
        for host in made)
    for host in made:
        vms_on(host, guests)
    return made


def vms_on(host: Host, n: int) -> list[VirtualMachine]:
    vms = VirtualMachine.objects.bulk_create(
        VirtualMachine(host=host, uuid=uuid.uuid4(), name=f"vm-{next(_serial):05d}", vcpus=1, memory_kib=2**20,
                       state="running" if i % 4 else "shutoff", arch="x86_64", domain_type="kvm", machine="pc-q35-7.2")
        for i in range(n))
    VirtualDisk.objects.bulk_create(
        VirtualDisk(vm=vm, target="vda", device="disk", source_type="file", source=f"/srv/vmstore/{vm.name}.qcow2",
                    format="qcow2", storage="local" if i % 5 == 0 else "shared",
                    # Half the disks sized by a refresh, half never: both kinds of cell in the guest table.
                    capacity_bytes=20 * 2**30 if i % 2 else None, allocation_bytes=2**30 if i % 2 else None)
        for i, vm in enumerate(vms))
    return vms


def users(n: int) -> list:
    User = get_user_model()
    return User.objects.bulk_create(User(username=f"user-{next(_serial):05d}") for _ in range(n))


def jobs(n: int, *, target_type: str = "host", target_id: str = "1", kind: str = "host_refresh") -> list[Job]:
    return Job.objects.bulk_create(
        Job(kind=kind, target_type=target_type, target_id=target_id, target_label=f"{target_type} {target_id}",
            timeout_s=60, created_by=user)
        for user in users(n))


def audit_events(n: int, *, target_type: str = "host", target_id: str = "1") -> None:
    from core import audit_chain

    now = timezone.now()
    job_rows = jobs(n, target_type=target_type, target_id=target_id)
    audit_chain.append_many([
        dict(time=now - timedelta(seconds=i), actor_id=None, actor_label=f"user{i}", action="host.refresh",
             target_type=target_type, target_id=target_id, target_label=f"{target_type}-{target_id}",
             parameters={}, result="ok", message=f"event {i}", source_ip="127.0.0.1", request_id=f"{i:032x}",
             job_id=job.pk)
        for i, job in enumerate(job_rows)])


@pytest.fixture
def host(db):
    return hosts(1, guests=2)[0]


# -- core ------------------------------------------------------------------------------------------


def test_jobs_list(admin_client):
    assert_constant_queries(admin_client, reverse("core:job_list"), lambda n: jobs(n))


def test_audit_list(admin_client):
    assert_constant_queries(admin_client, reverse("core:audit"), lambda n: audit_events(n))


def test_audit_list_filtered_by_target(admin_client, host):
    assert_constant_queries(admin_client, reverse("core:audit"),
                            lambda n: audit_events(n, target_id=str(host.pk)),
                            params={"target_type": "host", "target": str(host.pk)})


def test_people_list(admin_client):
    assert_constant_queries(admin_client, reverse("core:people"), users)


# -- hosts -----------------------------------------------------------------------------------------


def test_inventory(admin_client):
    # Hosts and guests both grow: 10 → 1,000 guests on 1 → 100 hosts.
    assert_constant_queries(admin_client, reverse("hosts:inventory"), lambda n: hosts(n // 10, guests=10))


@pytest.mark.parametrize("params", [
    {"state": "running", "q": "vm-"}, {"local_disks": "yes"}, {"tag": "gpu"}, {"sort": "-memory"},
    {"hsort": "-guests"}, {"hsort": "memory"}, {"hsort": "status"}, {"maintenance": "no"},
])
def test_inventory_filtered_and_sorted(admin_client, params):
    assert_constant_queries(admin_client, reverse("hosts:inventory"), lambda n: hosts(n // 10, guests=10),
                            params=params)


def test_inventory_live_partial(admin_client):
    assert_constant_queries(admin_client, reverse("hosts:inventory_tables"), lambda n: hosts(n // 10, guests=10))


def grow_host_page(host: Host, n: int) -> None:
    """What the host page lists grows: its guests, jobs, audit events, migrations, evacuations,
    saved states, shares, windows, recoveries; and the fleet's other hosts."""
    from calendar_app.models import MaintenanceWindow
    from guest_state.models import SavedState
    from maintenance.models import Evacuation
    from migrations_app.models import Migration
    from recovery.models import HostRecovery
    from storage.models import Share

    others = hosts(max(1, n // 10))
    vms = vms_on(host, n)
    jobs(n, target_id=str(host.pk))
    audit_events(n, target_id=str(host.pk))
    for vm, other in zip(vms, itertools.cycle(others)):
        Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=host, destination=other, options={})
    Evacuation.objects.bulk_create(Evacuation(host=host, status="succeeded") for _ in range(n))
    SavedState.objects.bulk_create(SavedState(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=host, status="saved",
                                              path=f"/srv/vmstore/{vm.name}.save") for vm in vms)
    for other in others:
        share = Share.objects.create(server=host, export_path=f"/srv/{other.name}", mount_path=f"/mnt/{other.name}")
        share.clients.add(other)
    start = timezone.now() + timedelta(days=1)
    for i in range(max(1, n // 10)):
        window = MaintenanceWindow.objects.create(title=f"w{i}", start=start + timedelta(hours=i),
                                                  end=start + timedelta(hours=i, minutes=30))
        window.hosts.add(host, others[i % len(others)])
    HostRecovery.objects.bulk_create(HostRecovery(host=host, fencing_statement="fenced", status="succeeded")
                                     for _ in range(min(n, 50)))


@pytest.mark.parametrize("page", ["hosts:host_detail", "hosts:host_detail_body"])
def test_host_page(admin_client, host, page):
    assert_constant_queries(admin_client, reverse(page, args=[host.pk]), lambda n: grow_host_page(host, n))


def grow_guest_page(vm: VirtualMachine, n: int) -> None:
    from guest_state.models import SavedState
    from migrations_app.models import ColdMigration, Migration

    others = hosts(max(1, n // 10))
    jobs(n, target_type="vm", target_id=str(vm.pk))
    audit_events(n, target_type="vm", target_id=str(vm.pk))
    VirtualDisk.objects.bulk_create(
        VirtualDisk(vm=vm, target=f"vd{next(_serial)}", device="disk", source_type="file",
                    source=f"/srv/vmstore/{vm.name}-{i}.qcow2", format="qcow2", storage="shared") for i in range(n))
    for other in itertools.islice(itertools.cycle(others), n):
        Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=vm.host, destination=other,
                                 options={}, status="succeeded")
        ColdMigration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=vm.host, destination=other,
                                     status="succeeded")
    SavedState.objects.bulk_create(SavedState(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=vm.host, status="saved",
                                              path=f"/srv/vmstore/{vm.name}-{i}.save") for i in range(n))


@pytest.mark.parametrize("page", ["hosts:vm_detail", "hosts:vm_detail_body"])
def test_guest_page(admin_client, host, page):
    vm = host.vms.first()
    assert_constant_queries(admin_client, reverse(page, args=[host.pk, vm.uuid]), lambda n: grow_guest_page(vm, n))


def test_host_groups(admin_client):
    from hosts.models import HostGroup

    def grow(n):
        members = hosts(n)
        people = users(n)
        for i in range(max(1, n // 10)):
            group = HostGroup.objects.create(name=f"group-{next(_serial)}")
            group.hosts.add(*members[i::10])
            for person in people[i::10]:
                group.grants.create(user=person, role="Viewer")

    assert_constant_queries(admin_client, reverse("hosts:host_groups"), grow)


# -- migrations ------------------------------------------------------------------------------------


def grow_migrations(n: int) -> None:
    from migrations_app.models import ColdMigration, Migration

    fleet = hosts(max(2, n // 10), guests=0)
    people = users(n)
    pairs = zip(itertools.cycle(fleet), itertools.cycle(fleet[1:] + fleet[:1]))
    for i, ((src, dst), person) in enumerate(zip(pairs, people)):
        Migration.objects.create(vm_uuid=uuid.uuid4(), vm_name=f"vm-{i}", source=src, destination=dst, options={},
                                 requested_by=person, status="succeeded" if i % 2 else "failed")
        ColdMigration.objects.create(vm_uuid=uuid.uuid4(), vm_name=f"vm-{i}", source=src, destination=dst,
                                     requested_by=person, status="succeeded")


@pytest.mark.parametrize("page", ["migrations_app:migration_list", "migrations_app:migration_rows",
                                  "migrations_app:cold_rows"])
def test_migrations_list(admin_client, page):
    assert_constant_queries(admin_client, reverse(page), grow_migrations)


# -- storage ---------------------------------------------------------------------------------------


def grow_shares(n: int) -> None:
    from storage.models import Share

    fleet = hosts(max(2, n // 10))
    for i in range(n):
        share = Share.objects.create(server=fleet[i % len(fleet)], export_path=f"/srv/vmstore-{next(_serial)}",
                                     mount_path="/mnt/vmstore", status="ready" if i % 2 else "new")
        share.clients.add(fleet[(i + 1) % len(fleet)], fleet[(i + 2) % len(fleet)])


@pytest.mark.parametrize("params", [{}, {"q": "vmstore"}, {"status": "ready"}, {"sort": "-server"}, {"page": "2"}])
def test_shares_list(admin_client, params):
    assert_constant_queries(admin_client, reverse("storage:share_list"), grow_shares, params=params)


def test_share_page(admin_client):
    from storage.models import Share, ShareSetup

    fleet = hosts(3)
    share = Share.objects.create(server=fleet[0], export_path="/srv/vmstore", mount_path="/mnt/vmstore")
    share.clients.add(*fleet[1:])

    def grow(n):
        ShareSetup.objects.bulk_create(ShareSetup(share=share, stamp=f"s{i}", token=f"t{i}", status="succeeded",
                                                  created_by=person) for i, person in enumerate(users(n)))

    assert_constant_queries(admin_client, reverse("storage:share_detail", args=[share.pk]), grow)


# -- saved states ----------------------------------------------------------------------------------


def test_saved_states_list(admin_client):
    from guest_state.models import SavedState, StateRestore

    def grow(n):
        fleet = hosts(max(1, n // 10), guests=10)
        vms = VirtualMachine.objects.filter(host__in=fleet).select_related("host")
        states = SavedState.objects.bulk_create(
            SavedState(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=vm.host, status="saved", requested_by=person,
                       path=f"/srv/vmstore/{vm.name}.save") for vm, person in zip(vms, users(n)))
        StateRestore.objects.bulk_create(StateRestore(state=state, host=state.host, status="succeeded")
                                         for state in states)

    assert_constant_queries(admin_client, reverse("guest_state:list"), grow)


# -- maintenance and calendar ----------------------------------------------------------------------


def test_evacuations_list(admin_client):
    from maintenance.models import Evacuation, EvacuationItem

    def grow(n):
        fleet = hosts(max(2, n // 10))
        people = users(n)
        evacuations = Evacuation.objects.bulk_create(
            Evacuation(host=fleet[i % len(fleet)], status="succeeded", requested_by=person)
            for i, person in enumerate(people))
        EvacuationItem.objects.bulk_create(
            EvacuationItem(evacuation=ev, position=p, vm_uuid=uuid.uuid4(), vm_name=f"vm-{p}", action="live",
                           origin=ev.host, destination=fleet[(i + 1) % len(fleet)], status="succeeded")
            for i, ev in enumerate(evacuations) for p in range(2))

    assert_constant_queries(admin_client, reverse("maintenance:evacuation_list"), grow)


def test_evacuation_page(admin_client):
    from maintenance.models import Evacuation, EvacuationItem
    from migrations_app.models import Migration

    fleet = hosts(3)
    ev = Evacuation.objects.create(host=fleet[0], status="succeeded")

    def grow(n):
        items = []
        for _ in range(n):
            position = next(_serial)
            migration = Migration.objects.create(vm_uuid=uuid.uuid4(), vm_name=f"vm-{position}", source=fleet[0],
                                                 destination=fleet[1 + position % 2], options={}, status="succeeded")
            items.append(EvacuationItem(evacuation=ev, position=position, vm_uuid=migration.vm_uuid,
                                        vm_name=migration.vm_name, action="live", origin=fleet[0],
                                        destination=migration.destination, status="succeeded", migration=migration))
        EvacuationItem.objects.bulk_create(items)

    assert_constant_queries(admin_client, reverse("maintenance:evacuation_detail", args=[ev.pk]), grow)


def grow_windows(n: int) -> None:
    from calendar_app.models import MaintenanceWindow

    fleet = hosts(max(2, n // 10))
    start = timezone.now() + timedelta(hours=1)
    for i in range(n):
        window = MaintenanceWindow.objects.create(title=f"window {i}", start=start + timedelta(minutes=i),
                                                  end=start + timedelta(minutes=i + 30))
        window.hosts.add(fleet[i % len(fleet)], fleet[(i + 1) % len(fleet)])


@pytest.mark.parametrize("page", ["calendar_app:calendar", "calendar_app:events"])
def test_calendar(admin_client, page):
    assert_constant_queries(admin_client, reverse(page), grow_windows)


# -- recovery and fleet ----------------------------------------------------------------------------


def test_recovery_page(admin_client):
    from recovery.models import HostRecovery, RecoveryItem

    fleet = hosts(2)
    recovery = HostRecovery.objects.create(host=fleet[0], destination=fleet[1], fencing_statement="fenced",
                                           status="succeeded")

    def grow(n):
        RecoveryItem.objects.bulk_create(
            RecoveryItem(recovery=recovery, vm_uuid=uuid.uuid4(), vm_name=f"vm-{i}", destination=target,
                         definition_encrypted="", status="succeeded", job=job)
            for i, (target, job) in enumerate(zip(itertools.cycle(hosts(max(1, n // 10))), jobs(n))))

    assert_constant_queries(admin_client, reverse("recovery:detail", args=[recovery.pk]), grow)


def test_recovery_plan(admin_client):
    down = hosts(1)[0]
    Host.objects.filter(pk=down.pk).update(status="unreachable")
    assert_constant_queries(admin_client, reverse("recovery:plan", args=[down.pk]),
                            lambda n: (vms_on(down, n), hosts(max(1, n // 10))))


def test_fleet_page(admin_client):
    assert_constant_queries(admin_client, reverse("fleet:fleet"), lambda n: hosts(n // 10, guests=10))


# -- keyset pages of the lists that had a fixed cap ---------------------------------------------------


def _walk_pages(client, url: str, marker: str) -> list[int]:
    """Follow a list's Older links from its first page: how many rows (``marker`` in the HTML) each has."""
    import re

    counts, query = [], ""
    for _ in range(10):
        html = client.get(url + query).content.decode()
        counts.append(html.count(marker))
        found = re.search(r'href="\?(older=[^"]+)"', html)
        if not found:
            return counts
        query = "?" + found.group(1).replace("&amp;", "&")
    raise AssertionError("more pages than rows")


def test_saved_states_and_evacuations_are_paged_newest_first(admin_client):
    from guest_state.models import SavedState
    from maintenance.models import Evacuation

    fleet = hosts(3, guests=1)
    vm = VirtualMachine.objects.filter(host=fleet[0]).first()
    now = timezone.now()
    SavedState.objects.bulk_create(
        SavedState(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=vm.host, status="saved",
                   path=f"/srv/vmstore/s-{i}.save", created=now - timedelta(minutes=i)) for i in range(57))
    Evacuation.objects.bulk_create(Evacuation(host=fleet[i % 3], status="succeeded", created=now - timedelta(minutes=i))
                                   for i in range(57))
    assert _walk_pages(admin_client, reverse("guest_state:list"), "/srv/vmstore/s-") == [50, 7]
    assert _walk_pages(admin_client, reverse("maintenance:evacuation_list"), 'class="badge evac-') == [50, 7]
    first = admin_client.get(reverse("guest_state:list")).content.decode()
    assert first.index("/srv/vmstore/s-0.save") < first.index("/srv/vmstore/s-1.save")  # newest first


def test_people_are_paged_by_name(admin_client):
    import re

    get_user_model().objects.bulk_create(get_user_model()(username=f"person-{i:03d}") for i in range(60))
    first = admin_client.get(reverse("core:people")).content.decode()
    assert first.count('href="/people/') >= 50 and "person-048" in first and "person-059" not in first
    assert re.search(r"People 1–50 of 6\d", first)
    second = admin_client.get(reverse("core:people") + "?page=2").content.decode()
    assert "person-059" in second and "person-000" not in second
    assert admin_client.get(reverse("core:people") + "?page=999").status_code == 200  # the last page
