"""pytest support for the lab: bring it up once per session, or reuse a running one.

Without root (or the packages) lab tests skip with the reason, unless
``VMPORTAL_REQUIRE_LAB=1`` (set by CI), where a missing lab is a failure.
"""

from __future__ import annotations

import os

import pytest

from lab import hosts
from lab.system import LabError, check_prerequisites


def require_lab() -> bool:
    return os.environ.get("VMPORTAL_REQUIRE_LAB") == "1"


def unavailable(reason: str):
    if require_lab():
        pytest.fail(f"the lab is required (VMPORTAL_REQUIRE_LAB=1) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"lab unavailable: {reason}")


class LabSession:
    """What the session knows about the lab it uses."""

    def __init__(self) -> None:
        self.owned = False  # True when this session brought the lab up (and will take it down)
        self.error: str | None = None

    def ensure_up(self) -> dict:
        if self.error:
            unavailable(self.error)
        try:
            check_prerequisites()
            if not hosts.is_up():
                hosts.up(int(os.environ.get("VMPORTAL_LAB_HOSTS", "3")), log=lambda *_: None)
                self.owned = True
        except LabError as exc:
            self.error = str(exc)
            unavailable(self.error)
        return hosts.status()
