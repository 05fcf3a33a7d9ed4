"""The fault matrix: a fault injected while a lab heartbeat guest migrates live, run by a real RQ
worker (`manage.py rqworker`, the portal's worker class) against a database file and a Redis of
this module's own. Each row: the guest runs on exactly one host (libvirt asked on every lab host),
the Migration record is terminal and true (its status matches where libvirt says the guest is)
within 10 s of the fault, or of the faulty component's return, the guest's lease is released.

Each row's settle time (fault, or return, → record terminal and true) is printed and written to
var/fault_matrix.txt. The migration is slowed by its own bandwidth limit, so its "migrating" phase
lasts long enough to be hit; the phases are awaited on the record, never slept through.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import django_rq.settings
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections

from hosts.models import GuestLease, VirtualMachine
from lab_support import SYSTEM, heartbeat_guest, run_knob, vm_row, where
from migrations_app.choices import MIGRATION_TERMINAL_STATES
from migrations_app.choices import MigrationStatusChoices as S
from migrations_app.models import Migration
from migrations_app.options import MigrationOptions
from migrations_app.services import live
from hosts.management.commands.lab_onboard import onboard_lab_host
from tests.rq_support import free_port
from tests.waiting import wait_until

PROJECT = Path(__file__).resolve().parents[2]
REPORT = PROJECT / "var" / "fault_matrix.txt"
SETTLE_S = 10  # the requirement
# 64 MiB of guest memory at 4 MiB/s: ~16 s of "migrating" to hit.
SLOW = MigrationOptions(bandwidth_mibps=4)

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]


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
        self.workdir, self.redis_port = workdir, free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REDIS_", "DATABASE_"))},
            "DJANGO_SETTINGS_MODULE": "vmportal.settings",
            "DJANGO_SECRET_KEY": "fault-matrix-test-key",
            "VMPORTAL_SECRETS_KEY": os.environ["VMPORTAL_SECRETS_KEY"],  # the test settings' key
            "VMPORTAL_AUDIT_KEY": os.environ["VMPORTAL_AUDIT_KEY"],
            "DATABASE_URL": f"sqlite:///{db_path}",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "PYTHONUNBUFFERED": "1",
        }
        self.redis = start_redis(self.redis_port, workdir)
        self.worker: subprocess.Popen | None = None
        self.log = open(workdir / "worker.log", "a")

    def start_worker(self) -> None:
        self.worker = subprocess.Popen([sys.executable, "manage.py", "rqworker", "default", "migrations"],
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

    def restart_redis(self) -> None:
        self.redis.kill()
        self.redis.wait(10)
        self.redis = start_redis(self.redis_port, self.workdir)

    def close(self) -> None:
        self.stop_worker()
        self.redis.terminate()
        self.redis.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def portal(lab, django_db_blocker, tmp_path_factory):
    """The test process and the worker share one SQLite file (the test database is in memory)."""
    workdir = tmp_path_factory.mktemp("fault-matrix")
    db_path = workdir / "portal.sqlite3"
    conn = connections["default"]
    saved_name, saved_queues = conn.settings_dict["NAME"], {k: dict(v) for k, v in django_rq.settings.QUEUES.items()}
    saved_inline = settings.VMPORTAL_JOBS_INLINE
    with django_db_blocker.unblock():
        conn.close()
        conn.settings_dict["NAME"] = str(db_path)
        call_command("migrate", verbosity=0)
        p = Portal(workdir, db_path)
        for q in django_rq.settings.QUEUES.values():
            q["URL"] = p.env["REDIS_URL"]
        settings.VMPORTAL_JOBS_INLINE = False
        try:
            p.start_worker()
            hosts = {}
            for entry in lab["hosts"]:
                host, _created = onboard_lab_host(entry, actor=SYSTEM)
                hosts[entry["name"]] = host
            p.hosts = hosts
            REPORT.parent.mkdir(exist_ok=True)
            REPORT.write_text("fault matrix: row | settle time (fault or return -> record terminal and true) | outcome\n")
            yield p
        finally:
            p.close()
            settings.VMPORTAL_JOBS_INLINE = saved_inline
            for name, q in saved_queues.items():
                django_rq.settings.QUEUES[name].update(q)
            conn.close()
            conn.settings_dict["NAME"] = saved_name


# --- one row ---------------------------------------------------------------------------


def truthful(migration: Migration, lab_hosts: list[dict], domain_uuid: str) -> bool:
    migration.refresh_from_db()
    if migration.status not in MIGRATION_TERMINAL_STATES:
        return False
    found = where(lab_hosts, domain_uuid)
    expected = migration.destination.name if migration.status == S.SUCCEEDED else migration.source.name
    return found == {expected: "running"} or (migration.status == S.NEEDS_ATTENTION and len(found) == 1)


def run_row(portal, lab, name: str, inject, *, status=S.MIGRATING, restore=None) -> Migration:
    """Start a slow migration, inject the fault once the record is in ``status``, and check the end."""
    src_lab, dst_lab = lab["hosts"][0], lab["hosts"][1]
    src, dst = portal.hosts[src_lab["name"]], portal.hosts[dst_lab["name"]]
    with heartbeat_guest(src_lab, prefix="fm") as (_guest, domain_uuid):
        vm = vm_row(src, domain_uuid)
        migration = live.migration_request(vm=vm, destination=dst, options=SLOW, actor=SYSTEM)
        wait_until(lambda: Migration.objects.get(pk=migration.pk).status == status, timeout=60,
                   what=f"migration #{migration.pk} {status}")
        t0 = time.monotonic()
        inject(src_lab, dst_lab)
        if restore is not None:
            restore(src_lab, dst_lab)
            t0 = time.monotonic()  # "within 10 s of the component's return"
        wait_until(lambda: truthful(migration, lab["hosts"], domain_uuid), timeout=120,
                   what=f"{name}: migration #{migration.pk} terminal and true")
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
    def inject(_src, _dst):
        pid = wait_until(portal.horse_pid, timeout=10, what="the work horse")
        os.kill(pid, signal.SIGKILL)
    return inject


def test_horse_killed_while_migrating(portal, lab):
    run_row(portal, lab, "kill -9 work horse / migrating", kill_horse(portal))


def test_worker_killed_while_migrating(portal, lab):
    def inject(_src, _dst):
        os.killpg(portal.worker.pid, signal.SIGKILL)
        portal.worker.wait(10)

    # The supervisor restarts a dead worker; the new one settles what the dead one left.
    run_row(portal, lab, "kill -9 whole worker / migrating", inject, restore=lambda _s, _d: portal.start_worker())


def test_source_libvirtd_restarted_while_migrating(portal, lab):
    run_row(portal, lab, "source libvirtd restarted / migrating",
            lambda src, _dst: run_knob("libvirtd-restart", src["name"]))


def test_redis_restarted_while_migrating(portal, lab):
    run_row(portal, lab, "Redis restarted / migrating", lambda _s, _d: portal.restart_redis())


def test_migration_ports_blocked_while_migrating(portal, lab):
    try:
        run_row(portal, lab, "migration ports blocked / migrating",
                lambda _src, dst: run_knob("block-ports", dst["name"]))
    finally:
        run_knob("block-ports", lab["hosts"][1]["name"], undo=True)
