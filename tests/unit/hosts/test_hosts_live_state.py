"""A lifecycle event shows the guest's new state at once; the debounced refresh still follows."""

import pytest

from core import broadcast
from hosts.adapters.libvirt import _EVENTS
from hosts.choices import VMStateChoices
from hosts.live_state import ObservedState, state_after_event
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
