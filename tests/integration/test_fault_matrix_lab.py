"""The fault matrix: a fault injected while a lab heartbeat guest migrates live, run by a real RQ
worker (the portal's worker class, tests/integration/fault_worker.py) against a database file and
a Redis of this module's own. Each row: the guest runs on exactly one host (libvirt asked on every
lab host), the Migration record is terminal and true (its status matches where libvirt says the
guest is) within 10 s of the fault, or of the faulty component's return, the guest's lease is
released.

The module's database is its own SQLite file, migrated by ``manage.py migrate`` in a subprocess;
this process reaches it through a connection of its own put in place of the default one for the
module (the test database earlier modules set up is left alone, open, and restored after).

Each row's settle time (fault, or return, → record terminal and true) is printed and written to
var/fault_matrix.txt. The "migrating" rows slow the migration with its own bandwidth limit so
that phase lasts long enough to be hit; the short stages (preflight, completing, finishing,
post-checks) are held by the worker's hold points until the fault is injected. Phases are
awaited on the record and the hold points, never slept through.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import django_rq.settings
import pytest
from django.conf import settings
from django.db import connections
from django.db.utils import ConnectionHandler

from hosts.management.commands.lab_onboard import onboard_lab_host
from hosts.models import GuestLease, VirtualMachine
from lab_support import SYSTEM, heartbeat_guest, run_knob, vm_row, where
from migrations_app.choices import MIGRATION_TERMINAL_STATES
from migrations_app.choices import FollowUpStatusChoices as F
from migrations_app.choices import MigrationStatusChoices as S
from migrations_app.models import Migration
from migrations_app.options import MigrationOptions
from migrations_app.services import live
from tests.rq_support import free_port
from tests.waiting import wait_until

PROJECT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "fault_worker.py"
REPORT = PROJECT / "var" / "fault_matrix.txt"
SETTLE_S = 10  # the requirement
DB_LOCKED_S = 5  # how long the database is taken away in the "finishing" row
# 64 MiB of guest memory at 4 MiB/s: ~16 s of "migrating" to hit.
SLOW = MigrationOptions(bandwidth_mibps=4)
FAST = MigrationOptions()

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


# --- a portal of the module's own: database file, Redis, worker ---------------------------


def start_redis(port: int, workdir: Path) -> subprocess.Popen:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    conn = redis.Redis(host="127.0.0.1", port=port)

    def answers():
        try:
            return conn.ping()
        except redis.ConnectionError:
            return False

    wait_until(answers, timeout=10, what="redis-server answering")
    return proc


class Portal:
    def __init__(self, workdir: Path, db_path: Path):
        self.workdir, self.db_path, self.redis_port = workdir, db_path, free_port()
        self.holds = workdir / "holds"
        self.holds.mkdir()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REDIS_", "DATABASE_"))},
            "DJANGO_SETTINGS_MODULE": "vmportal.settings",
            "DJANGO_SECRET_KEY": "fault-matrix-test-key",
            "VMPORTAL_SECRETS_KEY": os.environ["VMPORTAL_SECRETS_KEY"],  # the test settings' key
            "VMPORTAL_AUDIT_KEY": os.environ["VMPORTAL_AUDIT_KEY"],
            "DATABASE_URL": f"sqlite:///{db_path}",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "FAULT_MATRIX_HOLDS": str(self.holds),
            "PYTHONPATH": str(PROJECT),
            "PYTHONUNBUFFERED": "1",
        }
        self.redis: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.log = open(workdir / "worker.log", "a")

    def migrate_database(self) -> None:
        """The schema, made as an admin makes it: ``manage.py migrate`` in a process of its own."""
        proc = subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=PROJECT,
                              env=self.env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def start_redis(self) -> None:
        self.redis = start_redis(self.redis_port, self.workdir)

    def start_worker(self) -> None:
        self.worker = subprocess.Popen([sys.executable, str(WORKER), "default", "migrations"],
                                       cwd=PROJECT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                       start_new_session=True)

    def stop_worker(self) -> None:
        if self.worker and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait(10)

    def horse_pid(self) -> int | None:
        """The work horse: the worker's forked child."""
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.worker.pid:
                    return int(entry.name)
        return None

    @contextlib.contextmanager
    def held_at(self, point: str):
        """The next work horse to reach ``point`` (fault_worker.POINTS) waits there: yields its pid."""
        gate, at = self.holds / f"hold-{point}", self.holds / f"at-{point}"
        at.unlink(missing_ok=True)
        gate.touch()
        try:
            yield lambda: int(wait_until(lambda: at.exists() and at.read_text(), timeout=60,
                                         what=f"a work horse at {point}"))
        finally:
            gate.unlink(missing_ok=True)

    def restart_redis(self) -> None:
        self.redis.kill()
        self.redis.wait(10)
        self.start_redis()

    def worker_log_tail(self) -> str:
        self.log.flush()
        return (self.workdir / "worker.log").read_text(errors="replace")[-4000:]

    def close(self) -> None:
        self.stop_worker()
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(10)
        self.log.close()


@contextlib.contextmanager
def own_database(db_path: Path):
    """This process's default connection, for the block, is one of its own to ``db_path``.

    Not a repointed NAME on the existing connection: once an earlier module has set up the
    in-memory test database, that connection ignores close() (closing would destroy it), so
    it would stay on the in-memory database whatever NAME says.
    """
    handler = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db_path),
                                             "OPTIONS": dict(settings.SQLITE_OPTIONS)}})
    ours, theirs = handler["default"], connections["default"]
    connections["default"] = ours
    try:
        yield
    finally:
        ours.close()
        connections["default"] = theirs


@contextlib.contextmanager
def running_portal(lab, django_db_blocker, workdir: Path):
    """A Portal on ``workdir`` with its database, Redis and worker, the lab hosts onboarded, and the test
    process pointed at the same database and Redis; everything put back afterwards."""
    p = Portal(workdir, workdir / "portal.sqlite3")
    saved_queues = {k: dict(v) for k, v in django_rq.settings.QUEUES.items()}
    saved_inline = settings.VMPORTAL_JOBS_INLINE
    try:
        p.migrate_database()
        p.start_redis()
        for q in django_rq.settings.QUEUES.values():
            q["URL"] = p.env["REDIS_URL"]
        settings.VMPORTAL_JOBS_INLINE = False
        with django_db_blocker.unblock(), own_database(p.db_path):
            p.start_worker()
            p.hosts = {entry["name"]: onboard_lab_host(entry, actor=SYSTEM)[0] for entry in lab["hosts"]}
            yield p
    finally:
        p.close()
        settings.VMPORTAL_JOBS_INLINE = saved_inline
        for name, q in saved_queues.items():
            django_rq.settings.QUEUES[name].update(q)


@pytest.fixture(scope="module")
def portal(lab, django_db_blocker, tmp_path_factory):
    """The test process and the worker share one SQLite file, made by the module itself."""
    with running_portal(lab, django_db_blocker, tmp_path_factory.mktemp("fault-matrix")) as p:
        REPORT.parent.mkdir(exist_ok=True)
        REPORT.write_text("fault matrix: row | settle time (fault or return -> record terminal and true) | outcome\n")
        yield p


# --- one row ---------------------------------------------------------------------------


def truthful(migration: Migration, lab_hosts: list[dict], domain_uuid: str, *, follow_up_ended: bool) -> bool:
    migration.refresh_from_db()
    if migration.status not in MIGRATION_TERMINAL_STATES:
        return False
    if follow_up_ended and migration.follow_up == F.RUNNING:
        return False
    found = where(lab_hosts, domain_uuid)
    expected = migration.destination.name if migration.status == S.SUCCEEDED else migration.source.name
    return found == {expected: "running"} or (migration.status == S.NEEDS_ATTENTION and len(found) == 1)


def run_row(portal, lab, name: str, inject, *, status=S.MIGRATING, restore=None, options=SLOW, hold=None,
            follow_up_ended=False) -> Migration:
    """Start a migration, inject the fault once the record is in ``status`` (and the horse at
    ``hold``: inject gets its pid), restore what the fault took away, and check the end."""
    src_lab, dst_lab = lab["hosts"][0], lab["hosts"][1]
    src, dst = portal.hosts[src_lab["name"]], portal.hosts[dst_lab["name"]]
    with heartbeat_guest(src_lab, prefix="fm") as (_guest, domain_uuid), \
            (portal.held_at(hold) if hold else contextlib.nullcontext()) as horse_at_hold:
        vm = vm_row(src, domain_uuid)
        migration = live.migration_request(vm=vm, destination=dst, options=options, actor=SYSTEM)
        wait_until(lambda: Migration.objects.get(pk=migration.pk).status == status, timeout=60,
                   what=f"migration #{migration.pk} {status}")
        horse = horse_at_hold() if hold else None
        t0 = time.monotonic()
        inject(src_lab, dst_lab, horse)
        if restore is not None:
            restore(src_lab, dst_lab)
            t0 = time.monotonic()  # "within 10 s of the component's return"
        try:
            wait_until(lambda: truthful(migration, lab["hosts"], domain_uuid, follow_up_ended=follow_up_ended),
                       timeout=120, what=f"{name}: migration #{migration.pk} terminal and true")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- worker log ---\n{portal.worker_log_tail()}") from exc
        settle_s = time.monotonic() - t0
        migration.refresh_from_db()
        found = where(lab["hosts"], domain_uuid)
        line = f"{name} | {settle_s:.1f} s | {migration.status}, guest on {found}: {migration.outcome}"
        print("\n" + line)
        with REPORT.open("a") as f:
            f.write(line + "\n")
        assert len(found) == 1 and list(found.values()) == ["running"], found
        assert settle_s < SETTLE_S, line
        assert not GuestLease.objects.filter(guest_uuid=domain_uuid).exists(), "the guest's lease is still held"
        if migration.status == S.SUCCEEDED:
            assert VirtualMachine.objects.get(uuid=domain_uuid).host_id == dst.pk
        return migration


def kill_horse(portal):
    def inject(_src, _dst, horse):
        pid = horse or wait_until(portal.horse_pid, timeout=10, what="the work horse")
        os.kill(pid, signal.SIGKILL)
    return inject


# --- kill -9 of the work horse, at each stage --------------------------------------------


def test_horse_killed_during_preflight(portal, lab):
    m = run_row(portal, lab, "kill -9 work horse / preflight", kill_horse(portal), status=S.CHECKING,
                options=FAST, hold="preflight")
    assert m.status == S.FAILED, m.outcome  # nothing was started: the guest stayed


def test_horse_killed_while_migrating(portal, lab):
    run_row(portal, lab, "kill -9 work horse / migrating", kill_horse(portal))


def test_horse_killed_while_completing(portal, lab):
    m = run_row(portal, lab, "kill -9 work horse / completing", kill_horse(portal), status=S.COMPLETING,
                options=FAST, hold="completing")
    assert m.status == S.SUCCEEDED, m.outcome  # libvirt had moved it: the hosts say so


def test_horse_killed_during_post_checks(portal, lab):
    m = run_row(portal, lab, "kill -9 work horse / post-checks", kill_horse(portal), status=S.SUCCEEDED,
                options=FAST, hold="post-checks", follow_up_ended=True)
    assert m.status == S.SUCCEEDED and m.follow_up == F.FAILED, (m.status, m.follow_up_note)
    assert "work horse" in m.follow_up_note, m.follow_up_note


# --- the other components ----------------------------------------------------------------


def test_worker_killed_while_migrating(portal, lab):
    def inject(_src, _dst, _horse):
        os.killpg(portal.worker.pid, signal.SIGKILL)
        portal.worker.wait(10)

    # The supervisor restarts a dead worker; the new one settles what the dead one left.
    run_row(portal, lab, "kill -9 whole worker / migrating", inject, restore=lambda _s, _d: portal.start_worker())


def test_destination_libvirtd_killed_while_migrating(portal, lab):
    try:
        m = run_row(portal, lab, "destination libvirtd killed / migrating",
                    lambda _src, dst, _horse: run_knob("libvirtd-kill", dst["name"]),
                    restore=lambda _src, dst: run_knob("libvirtd-kill", dst["name"], undo=True))
        assert m.status == S.FAILED, m.outcome  # it stayed on the source, and the record says so
    finally:
        run_knob("libvirtd-kill", lab["hosts"][1]["name"], undo=True)


def test_source_libvirtd_restarted_while_migrating(portal, lab):
    run_row(portal, lab, "source libvirtd restarted / migrating",
            lambda src, _dst, _horse: run_knob("libvirtd-restart", src["name"]))


def test_redis_restarted_while_migrating(portal, lab):
    run_row(portal, lab, "Redis restarted / migrating", lambda _s, _d, _h: portal.restart_redis())


def test_migration_ports_blocked_while_migrating(portal, lab):
    try:
        run_row(portal, lab, "migration ports blocked / migrating",
                lambda _src, dst, _horse: run_knob("block-ports", dst["name"]))
    finally:
        run_knob("block-ports", lab["hosts"][1]["name"], undo=True)


def test_database_locked_while_finishing(portal, lab):
    """The database is taken (an EXCLUSIVE transaction of another connection) for 5 s as the
    runner writes the end: the write waits, and the record is written when the database returns."""
    locker = sqlite3.connect(portal.db_path, isolation_level=None, timeout=30)

    def inject(_src, _dst, _horse):
        locker.execute("BEGIN EXCLUSIVE")
        (portal.holds / "hold-finishing").unlink()  # the horse goes on to write the end
        time.sleep(DB_LOCKED_S)  # the fault's duration, not a wait for something

    statuses_while_locked = []

    def restore(_src, _dst):
        # The end was not written past the lock: the record still says "completing" as it is released.
        statuses_while_locked.extend(row[0] for row in locker.execute(
            f"SELECT status FROM {Migration._meta.db_table} ORDER BY id DESC LIMIT 1"))
        locker.execute("COMMIT")

    try:
        m = run_row(portal, lab, "database locked 5 s / finishing", inject, status=S.COMPLETING, options=FAST,
                    hold="finishing", restore=restore)
        assert statuses_while_locked == [S.COMPLETING]
        assert m.status == S.SUCCEEDED, m.outcome
    finally:
        if locker.in_transaction:
            locker.execute("ROLLBACK")
        locker.close()
