"""Fixtures for the Django side of migrations: two hosts and a guest, in the inventory and the fleet.

``world`` (tests/unit/conftest.py) is the fake fleet with quick migration jobs: the runner,
the gatherer and the adapters run for real against it, reached through ``hosts.access``.
"""

from __future__ import annotations

import pytest

from core.actors import Actor
from tests.fakes.fleet import make_host, make_vm


@pytest.fixture
def two_hosts(db, world):
    """kvm-a runs web-1; kvm-b is empty. Both in the inventory and in the fleet."""
    src, dst = make_host("kvm-a"), make_host("kvm-b")
    vm = make_vm(src)
    world.adopt(src, world.guest_of(vm))
    world.adopt(dst)
    return src, dst, vm


@pytest.fixture
def system():
    return Actor.system()
