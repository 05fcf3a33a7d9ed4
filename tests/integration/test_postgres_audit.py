"""The audit chain on PostgreSQL, lab-free: many events, writer processes, real tampering.

Uses test_postgres.py's private cluster. Each step runs in a process of its own
(audit_pg_steps.py) against a throwaway database of that cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_postgres import postgres  # noqa: F401  (the cluster fixture)

PROJECT = Path(__file__).resolve().parents[2]
STEPS = Path(__file__).with_name("audit_pg_steps.py")
# The issue asks for 100k events; generating them takes about a minute on a loaded machine.
EVENTS = int(os.environ.get("VMPORTAL_AUDIT_PG_EVENTS", "100000"))


@pytest.fixture(scope="module")
def audit_db(postgres):  # noqa: F811
    import psycopg

    admin = postgres.replace("/vmportal?", "/postgres?")
    with psycopg.connect(_dsn(admin), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS vmportal_audit")
        conn.execute("CREATE DATABASE vmportal_audit")
    url = postgres.replace("/vmportal?", "/vmportal_audit?")
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(PROJECT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    assert step(env, "migrate")["vendor"] == "postgresql"
    return env


def _dsn(url: str) -> str:
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return f"dbname={parts.path.lstrip('/')} user={parts.username} host={query['host'][0]} port={query['port'][0]}"


def step(env, name, arg=None, *, background=False):
    argv = [sys.executable, str(STEPS), name] + ([str(arg)] if arg is not None else [])
    if background:
        return subprocess.Popen(argv, env=env, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.run(argv, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(2400)
def test_audit_chain_on_postgresql(audit_db):
    env = audit_db
    made = step(env, "generate", EVENTS)
    assert made["events"] == EVENTS
    # Writer processes at once, each in its own transactions: one chain, no fork.
    writers = [step(env, "write", 40, background=True) for _ in range(4)]
    for proc in writers:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    intact = step(env, "verify")
    assert intact["ok"] and intact["events"] == EVENTS + 160 and intact["forks"] == 0, intact

    refused = step(env, "refused")
    assert all("append-only" in outcome for outcome in refused.values()), refused

    victim = made["checkpoint_event"] - EVENTS // 2
    step(env, "tamper_update", victim)
    changed = step(env, "verify")
    assert (changed["ok"], changed["kind"], changed["event_id"]) == (False, "changed", victim), changed
    step(env, "tamper_restore", victim)
    assert step(env, "verify")["ok"]

    step(env, "tamper_rehash", victim)
    rehashed = step(env, "verify")
    # The chain itself is consistent again; the signed checkpoint is not fooled.
    assert (rehashed["ok"], rehashed["kind"]) == (False, "changed"), rehashed
    assert "rewritten and rehashed" in rehashed["message"] and rehashed["event_id"] == made["checkpoint_event"]

    step(env, "tamper_delete", victim + 10)
    gap = step(env, "verify")
    assert (gap["ok"], gap["kind"], gap["event_id"]) == (False, "deleted", victim + 11), gap
    assert f"#{victim + 9}" in gap["message"]
