"""What the "Portal health" page shows: the processes `make run` supervises, RQ's workers and
scheduler, and Redis.

Two sources, each read without trusting the other: the supervisor's state file
(VMPORTAL_SUPERVISOR_STATE, written atomically by scripts/supervisor.py every few seconds) says
which child runs, since when, how often it was restarted and how it last exited; Redis says
which RQ workers are registered (``Worker.all``, with their heartbeats) and who holds the
scheduler's lock. A portal not started by `make run` has no state file: the page says so and
still shows what Redis knows.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import django_rq
from django.conf import settings
from redis.exceptions import RedisError
from rq import Worker
from rq.scheduler import RQScheduler

logger = logging.getLogger(__name__)

# The supervisor rewrites its file every 2 s: older than this, it is not running any more.
STATE_STALE_S = 10.0
# A state file larger than this is not the supervisor's.
STATE_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class ChildHealth:
    name: str
    state: str  # up | restarting | given up | stopped
    pid: int | None
    uptime_s: float | None
    restarts: int
    last_exit_code: int | None
    note: str

    @property
    def is_up(self) -> bool:
        return self.state == "up"

    @property
    def last_exit(self) -> str:
        if self.last_exit_code is None:
            return ""
        code = self.last_exit_code
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


@dataclass(frozen=True)
class WorkerHealth:
    name: str
    state: str
    pid: int | None
    queues: list[str]
    heartbeat_age_s: float | None
    current_job: str
    # False: registered on this machine, but no such process (killed; Redis keeps its entry
    # until it expires). None: on another machine, cannot tell.
    alive: bool | None = None


@dataclass
class PortalHealth:
    supervisor: str  # "running", or why not
    children: list[ChildHealth] = field(default_factory=list)
    redis: str = ""
    redis_up: bool = False
    workers: list[WorkerHealth] = field(default_factory=list)
    scheduler: dict[str, str] = field(default_factory=dict)  # queue → holder of its scheduler lock

    @property
    def supervised(self) -> bool:
        return self.supervisor == "running"


def _number(value, kind=float):
    return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_supervisor_state(path: Path, *, now: float) -> tuple[str, list[ChildHealth]]:
    """The supervisor's word on its children, or why there is none ("not started by make run"…).

    The file is read defensively: anything malformed is reported, never raised."""
    try:
        if path.stat().st_size > STATE_MAX_BYTES:
            return f"{path.name} is larger than {STATE_MAX_BYTES // 1024} KiB; not reading it", []
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return "no supervisor state: the portal was not started with make run", []
    except (OSError, ValueError) as exc:
        return f"cannot read the supervisor state: {exc}", []
    if not isinstance(data, dict) or not isinstance(data.get("children"), list):
        return "the supervisor state file is not in the expected form", []
    updated = _number(data.get("updated"))
    children = []
    for row in data["children"]:
        if not isinstance(row, dict):
            continue
        up_since = _number(row.get("up_since"))
        children.append(ChildHealth(
            name=str(row.get("name", "?"))[:80],
            state=str(row.get("state", "?"))[:20],
            pid=_number(row.get("pid"), int),
            uptime_s=max(0.0, now - up_since) if up_since is not None else None,
            restarts=_number(row.get("restarts"), int) or 0,
            last_exit_code=_number(row.get("last_exit_code"), int),
            note=str(row.get("note", ""))[:300],
        ))
    if updated is None or now - updated > STATE_STALE_S:
        age = f"{int(now - updated)} s ago" if updated is not None else "at an unknown time"
        return f"not running: its state was last written {age} (make run stopped?)", children
    return "running", children


def _process_alive(pid: int | None) -> bool:
    return bool(pid) and Path(f"/proc/{pid}").exists()


def _workers(connection, *, now: float) -> list[WorkerHealth]:
    rows = []
    here = socket.gethostname()
    for worker in Worker.all(connection=connection):
        beat = worker.last_heartbeat
        job_id = worker.get_current_job_id() or ""
        rows.append(WorkerHealth(
            name=worker.name, state=str(getattr(worker.get_state(), "value", worker.get_state())), pid=worker.pid,
            queues=worker.queue_names(),
            heartbeat_age_s=max(0.0, now - beat.timestamp()) if beat is not None else None,
            current_job=job_id,
            alive=_process_alive(worker.pid) if worker.hostname == here else None,
        ))
    return sorted(rows, key=lambda w: w.name)


def portal_health(*, now: float | None = None, connection=None) -> PortalHealth:
    """Everything the health page shows, read now (no host is contacted).

    ``connection`` is the Redis to ask (default: the queues' own)."""
    now = time.time() if now is None else now
    supervisor, children = read_supervisor_state(Path(settings.VMPORTAL_SUPERVISOR_STATE), now=now)
    health = PortalHealth(supervisor=supervisor, children=children)
    connection = connection if connection is not None else django_rq.get_connection("default")
    try:
        info = connection.info("server")
        health.redis = f"up (redis {info.get('redis_version', '?')}, up {info.get('uptime_in_seconds', '?')} s)"
        health.redis_up = True
        health.workers = _workers(connection, now=now)
        for queue in settings.RQ_QUEUES:
            holder = connection.get(RQScheduler.get_locking_key(queue))
            health.scheduler[queue] = holder.decode() if isinstance(holder, bytes) else (holder or "")
    except (RedisError, OSError) as exc:
        health.redis = f"down: {exc}"
    return health
