"""The Portal health page: the supervisor's state file read defensively, RQ and Redis as they are."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import redis
from rq import Worker

from core import health
from tests.rq_support import free_port, private_redis  # noqa: F401  (a fixture)

NOW = 1_000_000.0


def state_file(tmp_path, data) -> object:
    path = tmp_path / "supervisor.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


CHILDREN = [
    {"name": "rq worker 1", "pid": 41, "state": "up", "up_since": NOW - 120, "restarts": 2,
     "last_exit_code": -9, "last_exit_at": NOW - 121, "note": "killed by signal 9; restarting in 0.5 s"},
    {"name": "host watcher", "pid": None, "state": "given up", "up_since": None, "restarts": 4,
     "last_exit_code": 1, "last_exit_at": NOW - 5, "note": "died 5 times within 60 s"},
]


@pytest.mark.parametrize(
    "content, says, children",
    [
        (None, "not started with make run", 0),
        ("{not json", "cannot read the supervisor state", 0),
        ([1, 2], "not in the expected form", 0),
        ({"updated": NOW - 60, "children": CHILDREN}, "last written 60 s ago", 2),
        ({"children": CHILDREN}, "at an unknown time", 2),
        ({"updated": NOW - 1, "children": CHILDREN + ["junk", {"pid": "x", "up_since": "y"}]}, "running", 3),
        ("x" * (health.STATE_MAX_BYTES + 1), "larger than", 0),
    ],
)
def test_read_supervisor_state(tmp_path, content, says, children):
    path = tmp_path / "supervisor.json" if content is None else state_file(tmp_path, content)
    supervisor, rows = health.read_supervisor_state(path, now=NOW)
    assert says in supervisor
    assert len(rows) == children


def test_children_rows_say_uptime_restarts_and_last_exit(tmp_path):
    _, rows = health.read_supervisor_state(state_file(tmp_path, {"updated": NOW, "children": CHILDREN}), now=NOW)
    worker, watcher = rows
    assert (worker.is_up, worker.pid, worker.uptime_s, worker.restarts, worker.last_exit) == (
        True, 41, 120.0, 2, "killed by signal 9")
    assert (watcher.is_up, watcher.uptime_s, watcher.last_exit) == (False, None, "exit code 1")


def test_portal_health_lists_registered_workers_and_the_scheduler_lock(private_redis, settings, tmp_path):
    settings.VMPORTAL_SUPERVISOR_STATE = str(state_file(tmp_path, {"updated": time.time(), "children": CHILDREN}))
    worker = Worker(["default", "migrations"], connection=private_redis, name="portal-w1")
    worker.register_birth()
    worker.heartbeat()
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = Worker(["default"], connection=private_redis, name="portal-w0")
    gone.register_birth()
    private_redis.hset(gone.key, "pid", dead.pid)  # a worker killed before Redis forgot it
    private_redis.set("rq:scheduler-lock:default", "portal-w1")

    found = health.portal_health(connection=private_redis)

    assert found.supervised and found.redis_up and found.redis.startswith("up (redis ")
    assert [(w.name, w.queues, w.alive) for w in found.workers] == [
        ("portal-w0", ["default"], False), ("portal-w1", ["default", "migrations"], True)]
    assert found.workers[1].heartbeat_age_s is not None and found.workers[1].heartbeat_age_s < 60
    assert found.scheduler == {"default": "portal-w1", "migrations": ""}


def test_portal_health_says_redis_is_down(settings, tmp_path):
    settings.VMPORTAL_SUPERVISOR_STATE = str(tmp_path / "missing.json")
    found = health.portal_health(connection=redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5))
    assert not found.redis_up and found.redis.startswith("down:") and found.workers == []
    assert not found.supervised


def test_health_page_for_any_role_shows_each_process(viewer_client, settings, tmp_path):
    settings.VMPORTAL_SUPERVISOR_STATE = str(state_file(tmp_path, {"updated": time.time(), "children": CHILDREN}))
    page = viewer_client.get("/health/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "rq worker 1" in text and "killed by signal 9" in text and "given up" in text
    assert "died 5 times within 60 s" in text


def test_health_page_needs_a_login(client):
    page = client.get("/health/")
    assert page.status_code == 302 and "/login/" in page["Location"]
