"""Real races between database connections, for tests where two requests arrive at once.

Each racing request runs in its own thread on its own connection, as two web requests would,
released together by a barrier; the database decides who goes. On SQLite the default test
database (shared-cache, in memory) fails a second writer at once ("table is locked") instead
of waiting as the portal's SQLite file does, so ``connections_for_race`` races on a file copy
of the test database with the portal's own SQLite settings (IMMEDIATE transactions, busy
timeout, WAL). Tests using it need ``django_db(transaction=True)``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import connection, connections
from django.db.utils import load_backend


class Connections:
    """Runs callables in threads, each on its own connection to the database under test."""

    def __init__(self, settings_dict: dict | None):
        self.settings_dict = settings_dict  # None: the test database as configured

    def _connect(self) -> None:
        if self.settings_dict is not None:
            backend = load_backend(self.settings_dict["ENGINE"])
            connections["default"] = backend.DatabaseWrapper(dict(self.settings_dict), "default")

    def run(self, work: Callable[[], Any]) -> Any:
        """work() in a thread of its own; its result (or exception) comes back here."""
        return self.race([work])[0]

    def race(self, works: list[Callable[[], Any]]) -> list[Any]:
        """Start every work at once (a barrier); return each one's result or raised exception."""
        barrier = threading.Barrier(len(works))
        results: list[Any] = [None] * len(works)

        def go(i: int) -> None:
            self._connect()
            try:
                barrier.wait(timeout=10)
                results[i] = works[i]()
            except Exception as exc:  # the outcome of each request is what the test looks at
                results[i] = exc
            finally:
                connections["default"].close()

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(works))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "a request never finished"
        return results




def connections_for_race(tmp_path: Path) -> Connections:
    """Where racing requests run; call it after the test's rows exist (the SQLite copy holds them)."""
    settings_dict = None
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        path = tmp_path / "race.sqlite3"
        connection.ensure_connection()
        copy = sqlite3.connect(path)
        connection.connection.backup(copy)
        # In WAL already, as the portal's file is after its first use: two connections both
        # switching a fresh file to WAL at the same moment is not the race under test.
        copy.execute("PRAGMA journal_mode=WAL")
        copy.close()
        settings_dict = {**connection.settings_dict, "NAME": str(path)}
    return Connections(settings_dict)
