"""`make run` itself (scripts/run.py, without the lab): a worker killed with -9 comes back within
5 s and the portal keeps answering; SIGTERM stops every child.

Runs on free ports with a private database, Redis and state file; needs no lab and no root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from rq import Worker

from tests.rq_support import free_port
from tests.waiting import wait_until

PROJECT = Path(__file__).resolve().parents[2]



def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def make_run(tmp_path):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (make deps installs it)")
    http_port, redis_port = free_port(), free_port()
    state = tmp_path / "supervisor.json"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VMPORTAL_", "REDIS_"))},
        "VMPORTAL_LAB": "0",
        "VMPORTAL_HTTP_PORT": str(http_port),
        "VMPORTAL_REDIS_PORT": str(redis_port),
        "VMPORTAL_SUPERVISOR_STATE": str(state),
        "DJANGO_SECRET_KEY": "make-run-test-key",
        "VMPORTAL_SECRETS_KEY": Fernet.generate_key().decode(),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        "VMPORTAL_ADMIN_PASSWORD": "make-run-test-password",
        "PYTHONUNBUFFERED": "1",
    }
    log = open(tmp_path / "make-run.log", "w")
    proc = subprocess.Popen([sys.executable, "scripts/run.py"], cwd=PROJECT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    run = {"proc": proc, "state": state, "url": f"http://127.0.0.1:{http_port}",
           "redis": redis.Redis(host="127.0.0.1", port=redis_port), "log": tmp_path / "make-run.log"}
    try:
        yield run
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def children(run) -> dict:
    try:
        return {c["name"]: c for c in json.loads(run["state"].read_text())["children"]}
    except (FileNotFoundError, ValueError):
        return {}


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/login/", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_a_killed_worker_comes_back_within_5_s_and_the_portal_keeps_answering(make_run):
    run = make_run
    names = {"redis", "rq worker 1", "rq worker 2", "host watcher", "asgi server"}

    def all_up():
        found = children(run)
        return set(found) == names and all(c["state"] == "up" for c in found.values()) and answers(run["url"])

    try:
        wait_until(all_up, timeout=120, what="make run serving with every child up")
    except AssertionError:
        raise AssertionError(run["log"].read_text()[-3000:]) from None
    old_pid = children(run)["rq worker 2"]["pid"]
    wait_until(lambda: old_pid in {w.pid for w in Worker.all(connection=run["redis"])},
               timeout=30, what="the worker registered in Redis")

    os.kill(old_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def restarted():
        row = children(run).get("rq worker 2", {})
        new_pid = row.get("pid")
        return new_pid if row.get("state") == "up" and new_pid not in (None, old_pid) and alive(new_pid) else None

    # The supervisor has the worker running again within 5 s …
    new_pid = wait_until(restarted, timeout=5, what="rq worker 2 running again")
    running_after = time.monotonic() - killed_at
    assert answers(run["url"])
    # … and it takes jobs once Django has started in it (seconds of CPU: longer on a loaded machine).
    wait_until(lambda: new_pid in {w.pid for w in Worker.all(connection=run["redis"])},
               timeout=30, what="the new rq worker 2 registered with RQ")
    print(f"worker running again after {running_after:.2f} s, "
          f"registered with RQ after {time.monotonic() - killed_at:.2f} s")
    assert answers(run["url"])
    row = children(run)["rq worker 2"]
    assert row["restarts"] == 1 and row["last_exit_code"] == -9
    assert run["proc"].poll() is None and all(c["state"] == "up" for c in children(run).values())
    assert "rq worker 2" in run["log"].read_text() and "killed by signal 9" in run["log"].read_text()

    pids = [c["pid"] for c in children(run).values()]
    run["proc"].send_signal(signal.SIGTERM)
    assert run["proc"].wait(60) == 0
    assert not any(alive(pid) for pid in pids), "every child is stopped"
    assert new_pid not in pids or not alive(new_pid)
    assert all(c["state"] == "stopped" for c in children(run).values())
