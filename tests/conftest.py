"""Shared fixtures.

``lab`` (session) yields ``python -m lab status --json``'s dict for a lab that
is up: brought up once per session (and taken down at the end), or reused if
it already runs. ``lab_now`` re-reads the status for tests that need where
guests are right now.
"""

from __future__ import annotations

import pytest

from lab import hosts
from lab.testing import LabSession


@pytest.fixture(scope="session")
def lab_session():
    session = LabSession()
    yield session
    if session.owned:
        hosts.down(log=lambda *_: None)


@pytest.fixture(scope="session")
def lab(lab_session):
    return lab_session.ensure_up()


@pytest.fixture
def lab_now(lab_session):
    return lab_session.ensure_up()
