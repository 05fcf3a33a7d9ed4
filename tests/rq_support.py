"""A private Redis for tests that need RQ's real objects, and what RQ does when a work horse
dies mid-job: the real worker class's handler called as RQ's monitor_work_horse calls it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from unittest import mock

import pytest
import redis
from rq.job import Job as RQJob

from core.worker import PortalWorker

KILLED_BY_SIGKILL = 9  # os.waitpid's status for a process killed by signal 9


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own on a free port (stopped after it)."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (make deps installs it)")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            conn.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield conn
    proc.terminate()
    proc.wait(10)


def horse_killed(connection, job_id: int, *args) -> None:
    """RQ saw the work horse running portal job ``job_id`` die of SIGKILL."""
    worker = PortalWorker(["default"], connection=connection, name="test-worker")
    rq_job = RQJob.create(func="core.jobs.job_function", args=(job_id, *args), connection=connection)
    # The worker closes its database connections before forking the next horse. Here that would
    # close the test's own connection inside its transaction (PostgreSQL cannot carry on): count
    # the close instead of doing it.
    with mock.patch("core.worker.connections.close_all") as close_all:
        worker.handle_work_horse_killed(rq_job, 4242, KILLED_BY_SIGKILL, None)
    assert close_all.called, "the worker must not hand its connections to the next horse"
