"""A real portal for browser tests: private redis, daphne (HTTP + websockets) and an rqworker.

Each test module gets a portal of its own, so no module sees what another left behind and
their order does not matter: the database is migrated once per session (with the admin user
and the collected static files) and copied for every module, redis is emptied, and daphne and
the worker start on the copy. The production settings module (DEBUG off) is used; everything
runs from temporary directories and is stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet

from e2e_support import stop
from tests.waiting import wait_until

PROJECT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = PROJECT / "var" / "e2e-screenshots"
ADMIN_PASSWORD = "e2e-admin-password-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



def copy_database(source: Path, target: Path) -> None:
    """Copy a SQLite database through SQLite (the template is in WAL mode: a file copy could
    miss what is still in its -wal file)."""
    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT, env=env, capture_output=True, text=True,
        timeout=120, check=True,
    )


@dataclass
class Portal:
    url: str
    env: dict
    workdir: Path
    admin_password: str = ADMIN_PASSWORD

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return manage(self.env, *args)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    try:
        wait_until(answers, timeout=15, what="redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def portal_template(redis_url, tmp_path_factory) -> Portal:
    """The session's environment and a migrated database with the admin user, copied per module.

    One Django process does the three commands: each process start costs about as much as a
    command."""
    workdir = tmp_path_factory.mktemp("portal-template")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VMPORTAL_"))},
        "DJANGO_SETTINGS_MODULE": "vmportal.settings",
        "DJANGO_SECRET_KEY": "e2e-secret-key",
        "VMPORTAL_SECRETS_KEY": Fernet.generate_key().decode(),
        "VMPORTAL_AUDIT_KEY": "e2e-audit-key",
        "DATABASE_URL": f"sqlite:///{workdir / 'portal.sqlite3'}",
        "REDIS_URL": redis_url,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_STATIC_ROOT": str(workdir / "static"),
        "VMPORTAL_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "PYTHONPATH": str(PROJECT),
        "PYTHONUNBUFFERED": "1",
        # Only lab guests have a heartbeat; for any other guest the probe answers None.
        "VMPORTAL_GUEST_HEARTBEAT_PROBE": "lab.heartbeat:probe",
    }
    manage(env, "shell", "-c", "from django.core.management import call_command as c; "
                               "c('migrate', interactive=False, verbosity=0); "
                               "c('collectstatic', interactive=False, verbosity=0); c('ensure_admin')")
    return Portal(url="", env=env, workdir=workdir)


@pytest.fixture(scope="module")
def portal(portal_template, redis_url, tmp_path_factory):
    """This module's portal: a copy of the template database, an empty redis, daphne and a worker."""
    workdir = tmp_path_factory.mktemp("portal")
    copy_database(portal_template.workdir / "portal.sqlite3", workdir / "portal.sqlite3")
    # Queues, job results and channel groups of the modules before are gone too.
    with redis.Redis.from_url(redis_url) as client:
        client.flushall()
    port = free_port()
    # The port makes the site's origin: websockets from any other origin are refused.
    env = {**portal_template.env, "DATABASE_URL": f"sqlite:///{workdir / 'portal.sqlite3'}",
           "VMPORTAL_HTTP_PORT": str(port)}
    portal = Portal(url=f"http://127.0.0.1:{port}", env=env, workdir=workdir)
    logs = {name: open(workdir / f"{name}.log", "w") for name in ("daphne", "worker")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "vmportal.asgi:application"],
            cwd=PROJECT, env=env, stdout=logs["daphne"], stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", "default", "migrations"],
            cwd=PROJECT, env=env, stdout=logs["worker"], stderr=subprocess.STDOUT,
        ),
    ]

    def serving():
        try:
            with urllib.request.urlopen(f"{portal.url}/login/", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_until(serving, timeout=30, what="daphne to serve the login page")
        yield portal
    finally:
        for proc in procs:
            stop(proc)
        for handle in logs.values():
            handle.close()
    # Websocket consumers must not crash (e.g. redis read timeouts on idle sockets); the
    # pages would hide it by reconnecting.
    daphne_log = (workdir / "daphne.log").read_text()
    assert "Exception inside application" not in daphne_log, daphne_log[-3000:]


# One browser per module, not per session: Playwright's sync API keeps an event loop running in
# the main thread while it is open, and Django refuses ORM calls from a thread with a running
# loop ("You cannot call this from an async context"). pytest-django runs the lab tests that
# need no test database (the fault matrix among them) after the browser tests.
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, portal):
    context = browser.new_context(base_url=portal.url, viewport={"width": 1360, "height": 900})
    page = context.new_page()
    requests_elsewhere = []
    page.on("request", lambda r: None if r.url.startswith((portal.url, portal.url.replace("http", "ws"), "data:")) else requests_elsewhere.append(r.url))
    yield page
    # Leave the portal first so its websocket closes before the context does;
    # closing with a live socket open sometimes hung.
    from playwright.sync_api import Error as PlaywrightError

    try:
        page.goto("about:blank", timeout=5000)
    except PlaywrightError:
        pass  # closing the context below still ends the socket
    context.close()
    assert not requests_elsewhere, f"the page loaded from outside the portal: {requests_elsewhere}"


@pytest.fixture(scope="session")
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
