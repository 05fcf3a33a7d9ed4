"""Waiting on a condition with a deadline, never a fixed sleep: shared by tests that start processes."""

from __future__ import annotations

import time


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.1):
    """Return predicate()'s first truthy result; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
