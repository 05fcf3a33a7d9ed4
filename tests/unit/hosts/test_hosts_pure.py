"""Pure decision code of the inventory: duplicate identities, allowed VM actions, watcher backoff."""

import pytest

from hosts.choices import VMActionChoices
from hosts.duplicates import HostIdentity, find_duplicate_identities
from hosts.vm_actions import vm_action_allowed, vm_actions_available
from hosts.watcher import reconnect_delay


def ident(host_id, name, hostname="", host_uuid=""):
    return HostIdentity(host_id=host_id, name=name, hostname=hostname, host_uuid=host_uuid)


def test_no_duplicates():
    flags = find_duplicate_identities([ident(1, "a", "a.lan", "u1"), ident(2, "b", "b.lan", "u2")])
    assert flags == {}


def test_same_hostname_flagged_case_insensitively():
    flags = find_duplicate_identities([ident(1, "a", "KVM", "u1"), ident(2, "b", "kvm", "u2"), ident(3, "c", "other", "u3")])
    assert flags[1].same_hostname_as == ["b"]
    assert flags[2].same_hostname_as == ["a"]
    assert 3 not in flags
    assert not flags[1].same_uuid_as


def test_same_uuid_flagged_with_all_peers():
    flags = find_duplicate_identities([ident(1, "a", "x", "U"), ident(2, "b", "y", "u"), ident(3, "c", "z", "u")])
    assert flags[1].same_uuid_as == ["b", "c"]
    assert flags[3].same_uuid_as == ["a", "b"]


def test_unknown_identities_never_match():
    flags = find_duplicate_identities([ident(1, "a"), ident(2, "b"), ident(3, "c", " ", " ")])
    assert flags == {}


def test_both_kinds_at_once():
    flags = find_duplicate_identities([ident(1, "a", "clone", "U"), ident(2, "b", "clone", "U")])
    assert flags[1].same_hostname_as == ["b"] and flags[1].same_uuid_as == ["b"]
    assert bool(flags[1])


@pytest.mark.parametrize(
    "action,state,persistent,allowed",
    [
        ("start", "shutoff", True, True),
        ("start", "crashed", True, True),
        ("start", "running", True, False),
        ("start", "paused", True, False),
        ("start", "shutoff", False, False),
        ("shutdown", "running", True, True),
        ("shutdown", "paused", True, True),
        ("shutdown", "shutoff", True, False),
        ("shutdown", "shutdown", True, False),
        ("destroy", "running", True, True),
        ("destroy", "shutdown", True, True),
        ("destroy", "paused", False, True),
        ("destroy", "shutoff", True, False),
        ("reboot", "running", True, False),
        ("start", "bogus", True, False),
    ],
)
def test_vm_action_allowed(action, state, persistent, allowed):
    assert vm_action_allowed(action, state, persistent=persistent) is allowed


def test_actions_available_for_running_guest():
    assert vm_actions_available("running") == [VMActionChoices.SHUTDOWN, VMActionChoices.DESTROY]
    assert vm_actions_available("shutoff") == [VMActionChoices.START]


@pytest.mark.parametrize("failures,delay", [(0, 0), (1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (50, 60)])
def test_reconnect_delay_doubles_up_to_cap(failures, delay):
    assert reconnect_delay(failures) == delay
