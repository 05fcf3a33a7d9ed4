"""A lifecycle event shows the guest's new state at once; the debounced refresh still follows."""

from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.utils import timezone

from core import broadcast
from hosts.adapters.libvirt import _EVENTS
from hosts.choices import VMStateChoices
from hosts.live_state import ObservedState, read_is_newer, state_after_event
from hosts.models import VirtualMachine
from hosts.services import vm_state_observed


@pytest.mark.parametrize(("event", "detail", "expected"), [
    ("started", "booted", ObservedState("running", "booted")),
    ("started", "restored", ObservedState("running", "restored")),
    ("started", "from_snapshot", ObservedState("running", "from_snapshot")),
    ("started", "wakeup", ObservedState("running", "wakeup")),
    ("resumed", "unpaused", ObservedState("running", "unpaused")),
    ("resumed", "from_snapshot", ObservedState("running", "from_snapshot")),
    ("suspended", "paused", ObservedState("paused", "user")),
    ("suspended", "io_error", ObservedState("paused", "ioerror")),
    ("suspended", "watchdog", ObservedState("paused", "watchdog")),
    ("suspended", "something-new", ObservedState("paused", "unknown")),
    ("stopped", "destroyed", ObservedState("shutoff", "destroyed")),
    ("stopped", "shutdown", ObservedState("shutoff", "shutdown")),
    ("stopped", "saved", ObservedState("shutoff", "saved")),
    ("stopped", "crashed", ObservedState("shutoff", "crashed")),
    ("crashed", "panicked", ObservedState("crashed", "panicked")),
    ("crashed", "crashloaded", ObservedState("crashed", "unknown")),
    ("pmsuspended", "memory", ObservedState("pmsuspended", "unknown")),
    # Left to the refresh: the steps of a migration, definitions, a shutdown only begun.
    ("started", "migrated", None),
    ("suspended", "migrated", None),
    ("suspended", "postcopy", None),
    ("resumed", "postcopy", None),
    ("stopped", "migrated", None),
    ("defined", "added", None),
    ("undefined", "removed", None),
    ("shutdown", "finished", None),
    ("unknown", "unknown", None),
])
def test_the_state_an_event_tells_of(event, detail, expected):
    assert state_after_event(event, detail) == expected


def test_every_state_an_event_can_give_is_one_the_inventory_knows():
    for event, details in _EVENTS.values():
        for detail in details:
            observed = state_after_event(event, detail)
            assert observed is None or observed.state in VMStateChoices.values, (event, detail)


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(broadcast, "vm_state", lambda vm: calls.append((vm.pk, vm.state)))
    return calls


def web_1(host) -> VirtualMachine:
    return VirtualMachine.objects.get(host=host, name="web-1")


@pytest.mark.django_db
def test_an_observed_state_changes_only_that_guest_and_says_so_once(trusted_host, sent):
    vm = web_1(trusted_host)
    assert vm.state == "running"
    changed = vm_state_observed(host=trusted_host, domain_uuid=str(vm.uuid), state="paused", reason="user")
    assert changed is not None and changed.pk == vm.pk
    vm.refresh_from_db()
    assert (vm.state, vm.state_reason) == ("paused", "user")
    assert sent == [(vm.pk, "paused")]
    # The same observation again changes nothing and sends nothing.
    assert vm_state_observed(host=trusted_host, domain_uuid=str(vm.uuid), state="paused", reason="user") is None
    assert sent == [(vm.pk, "paused")]
    assert VirtualMachine.objects.get(host=trusted_host, name="db-1").state == "shutoff"


@pytest.mark.django_db
@pytest.mark.parametrize(("domain_uuid", "state"), [
    ("not-a-uuid", "paused"),
    ("'; DROP TABLE hosts_virtualmachine; --", "paused"),
    ("12345678-1234-1234-1234-123456789abc", "paused"),  # a guest the inventory does not have
    (None, "paused"),
    ("{uuid}", "exploded"),  # not a state the inventory knows
])
def test_an_observation_the_inventory_cannot_place_changes_nothing(trusted_host, sent, domain_uuid, state):
    vm = web_1(trusted_host)
    if domain_uuid == "{uuid}":
        domain_uuid = str(vm.uuid)
    assert vm_state_observed(host=trusted_host, domain_uuid=domain_uuid, state=state, reason="x") is None
    vm.refresh_from_db()
    assert vm.state == "running" and sent == []


@pytest.mark.django_db
def test_a_long_reason_is_cut_to_the_field(trusted_host, sent):
    vm = web_1(trusted_host)
    vm_state_observed(host=trusted_host, domain_uuid=str(vm.uuid), state="shutoff", reason="r" * 500)
    vm.refresh_from_db()
    assert vm.state == "shutoff" and len(vm.state_reason) == VirtualMachine._meta.get_field("state_reason").max_length


T = datetime(2026, 12, 4, 10, 0, tzinfo=dt_timezone.utc)
S = timedelta(seconds=1)


@pytest.mark.parametrize(("read_at", "state_at", "newer"), [
    (T, None, True),  # nothing recorded of when: the refresh writes
    (T, T - S, True),
    (T, T, True),  # the same instant: the read wins (it read everything, the event one thing)
    (T - S, T, False),  # the host was read before the event arrived: the event's state stays
    (T - 3600 * S, T, False),
])
def test_a_refresh_writes_a_state_only_if_it_read_the_host_after_it_was_recorded(read_at, state_at, newer):
    assert read_is_newer(read_at=read_at, state_at=state_at) is newer


@pytest.mark.django_db
def test_a_refresh_that_read_the_host_before_an_event_does_not_put_the_older_state_back(
        trusted_host, fleet, sent, monkeypatch):
    from dataclasses import replace

    from core.actors import Actor
    from hosts.services import host_inventory_save

    changed_guests = []
    monkeypatch.setattr(broadcast, "inventory_changed", lambda **kw: changed_guests.append(kw.get("guests") or {}))
    hv = fleet[trusted_host.address]
    vm = web_1(trusted_host)
    read_before = timezone.now()  # the refresh reads the host: web-1 still runs ...
    domains = list(hv.domains.values())
    vm_state_observed(host=trusted_host, domain_uuid=str(vm.uuid), state="paused", reason="user")  # ... then pauses
    vm.refresh_from_db()
    assert vm.state_at is not None and vm.state_at >= read_before

    # The refresh saves after the event: its other findings are written, web-1's older state is not.
    renamed = [replace(d, name="web-1b") if str(d.uuid) == str(vm.uuid) else d for d in domains]
    host_inventory_save(host=trusted_host, facts=hv.facts, os_release=None, domains=renamed, storage={},
                        read_at=read_before, actor=Actor.system())
    vm.refresh_from_db()
    assert (vm.name, vm.state, vm.state_reason) == ("web-1b", "paused", "user")
    assert vm.pk not in changed_guests[-1]  # no page is told of a state change that did not happen

    # A refresh that read the host after the event writes what it read.
    host_inventory_save(host=trusted_host, facts=hv.facts, os_release=None, domains=renamed, storage={},
                        read_at=timezone.now(), actor=Actor.system())
    vm.refresh_from_db()
    assert vm.state == "running" and changed_guests[-1][vm.pk][0] == "running"
