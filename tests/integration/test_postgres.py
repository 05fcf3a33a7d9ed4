"""The portal on PostgreSQL (DATABASE_URL), as a team scales out.

Starts a private PostgreSQL cluster (own data dir, Unix socket only, no TCP),
migrates the schema and runs the database-heavy unit tests against it in a
subprocess, so nothing SQLite-specific slips in.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


def pg_bin(tool: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return found[-1] if found else shutil.which(tool)


@pytest.fixture(scope="module")
def postgres():
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        if os.environ.get("VMPORTAL_REQUIRE_LAB") == "1":
            pytest.fail("PostgreSQL server binaries missing: apt-get install -y postgresql")
        pytest.skip("PostgreSQL server binaries missing (apt-get install -y postgresql)")
    # Not pytest's tmp_path: it is private to root, and PostgreSQL runs as its own user.
    base = Path(tempfile.mkdtemp(prefix="vmportal-pg-"))
    os.chmod(base, 0o755)
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    run_as = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, pg_ctl, "-D", str(data), "-w", "-l", str(base / "log"), "-o",
                    f"-c listen_addresses='' -k {sock} -p 5439 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgres://postgres@/vmportal?host={sock}&port=5439"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_schema_and_services_on_postgresql(postgres):
    env = {**os.environ, "DATABASE_URL": postgres, "PYTHONPATH": str(PROJECT)}
    env.pop("PYTEST_ADDOPTS", None)
    # Unit tests that go through the ORM (services, constraints, jobs, audit, guest leases and
    # their race between two connections), on PostgreSQL.
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit",
         "-k", "services or audit or jobs or migration_service or constraint or commands or roles or lease or evacuation"
         " or calendar",
         "-m", "not lab and not e2e"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900,
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and "postgresql" in subprocess.run(
        [sys.executable, "-c", "import django,os;os.environ['DJANGO_SETTINGS_MODULE']='vmportal.test_settings';"
         "django.setup();from django.db import connection;print(connection.vendor)"],
        cwd=PROJECT, env=env, capture_output=True, text=True).stdout
