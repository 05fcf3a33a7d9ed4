"""Shared fixtures.

``lab`` (session) yields ``python -m lab status --json``'s dict for a lab that
is up: brought up once per session (and taken down at the end), or reused if
it already runs. ``lab_now`` re-reads the status for tests that need where
guests are right now.
"""

from __future__ import annotations

import gc
import os

import pytest

from lab import hosts
from lab.testing import LabSession


@pytest.fixture(scope="session", autouse=True)
def lab_subnet_stays_here():
    """With the lab down, its addresses would route off this machine: make them unreachable."""
    if os.geteuid() == 0 and not hosts.subnet_guarded():
        hosts.guard_subnet()


@pytest.fixture(scope="session")
def lab_session():
    session = LabSession()
    yield session
    if session.owned:
        # A libvirt object left in a garbage cycle (an exception's traceback holding a domain)
        # closes its connection when freed, which waits for the host's answer: free them while
        # the hosts still answer, not at interpreter exit after the lab is gone.
        gc.collect()
        hosts.down(log=lambda *_: None)


@pytest.fixture(scope="session")
def lab(lab_session):
    return lab_session.ensure_up()


@pytest.fixture
def lab_now(lab_session):
    return lab_session.ensure_up()
