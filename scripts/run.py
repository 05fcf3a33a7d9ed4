"""`make run`: the whole portal on embedded defaults, stopped with Ctrl-C.

Starts, in order: a private redis-server (own port and data dir under var/),
database migrations, static files, the admin account, the lab (when running
as root with the packages) and its hosts onboarded, the RQ workers with the
scheduler, the host-event watcher, and the ASGI server on
http://127.0.0.1:8000. Ctrl-C stops every process it started, by PID, and
takes the lab down if it brought it up. A child that dies meanwhile is restarted with
backoff (scripts/supervisor.py; a crash-looping one is given up on, loudly, and the rest keeps
running) and the health page (/health/) shows each child's state from var/supervisor.json.
Safe to re-run.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from supervisor import Supervisor  # scripts/ is on the path: this file runs as scripts/run.py

BASE = Path(__file__).resolve().parent.parent
VAR = BASE / "var"
PY = sys.executable  # the virtualenv's real interpreter
REDIS_PORT = int(os.environ.get("VMPORTAL_REDIS_PORT", "6390"))
HTTP_PORT = int(os.environ.get("VMPORTAL_HTTP_PORT", "8000"))
WORKERS = int(os.environ.get("VMPORTAL_WORKERS", "2"))


def secret_file(path: Path, make) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make() + "\n")
    return path.read_text().strip()


def environment() -> dict:
    from cryptography.fernet import Fernet

    env = dict(os.environ)
    env.setdefault("DJANGO_SECRET_KEY", secret_file(VAR / "secret_key", lambda: secrets.token_urlsafe(50)))
    # Separate from SECRET_KEY on purpose: it encrypts host credentials at rest.
    env.setdefault("VMPORTAL_SECRETS_KEY", secret_file(VAR / "secrets.key", lambda: Fernet.generate_key().decode()))
    # Apart from both: it signs the audit trail's checkpoints.
    env.setdefault("VMPORTAL_AUDIT_KEY", secret_file(VAR / "audit.key", lambda: secrets.token_urlsafe(48)))
    env.setdefault("REDIS_URL", f"redis://127.0.0.1:{REDIS_PORT}/0")
    # Where the supervisor says what runs; the portal's health page reads it.
    env.setdefault("VMPORTAL_SUPERVISOR_STATE", str(VAR / "supervisor.json"))
    if os.environ.get("VMPORTAL_LAB", "1") != "0":
        # Lab guests print a heartbeat: migrations record how long the guest itself stopped.
        env.setdefault("VMPORTAL_GUEST_HEARTBEAT_PROBE", "lab.heartbeat:probe")
    env["PYTHONPATH"] = str(BASE)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Portal(Supervisor):
    """The supervisor of `make run`'s children, plus the one-off manage.py commands and the lab."""

    lab_started = False

    def manage(self, *args: str, check: bool = True) -> int:
        return subprocess.run([PY, "manage.py", *args], cwd=BASE, env=self.env, check=check).returncode

    def stop(self) -> None:
        super().stop()
        # Only on Ctrl-C: a child that died and came back never takes the lab down.
        if self.lab_started:
            subprocess.run([PY, "-m", "lab", "down"], cwd=BASE, env=self.env)


def main() -> int:
    env = environment()
    sup = Portal(env=env, cwd=BASE, state_path=Path(env["VMPORTAL_SUPERVISOR_STATE"]))
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    parent = os.getppid()
    try:
        redis_dir = VAR / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        if port_open(REDIS_PORT):
            print(f"something already listens on 127.0.0.1:{REDIS_PORT}; using it as Redis")
        else:
            sup.start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(REDIS_PORT),
                                "--dir", str(redis_dir), "--save", "", "--appendonly", "no"])
            deadline = time.monotonic() + 10
            while not port_open(REDIS_PORT):
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start")
                time.sleep(0.05)
        sup.manage("migrate", "--noinput", "-v", "0")
        sup.manage("collectstatic", "--noinput", "-v", "0")
        sup.manage("ensure_admin")
        if os.geteuid() == 0 and os.environ.get("VMPORTAL_LAB", "1") != "0":
            was_up = subprocess.run([PY, "-c", "from lab import hosts; raise SystemExit(0 if hosts.is_up() else 1)"],
                                    cwd=BASE, env=env).returncode == 0
            if subprocess.run([PY, "-m", "lab", "up"], cwd=BASE, env=env).returncode == 0:
                sup.lab_started = not was_up
                sup.manage("lab_onboard", check=False)
            else:
                print("the lab could not start (see above); the portal runs without it")
        for i in range(WORKERS):
            argv = [PY, "manage.py", "rqworker", "default", "migrations"]
            if i == 0:
                argv.append("--with-scheduler")
            sup.start(f"rq worker {i + 1}", argv)
        sup.start("host watcher", [PY, "manage.py", "watch_hosts"])
        sup.start("asgi server", [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(HTTP_PORT), "vmportal.asgi:application"])
        print(f"\nVMPortal: http://127.0.0.1:{HTTP_PORT}/  (Ctrl-C stops everything)\n")

        def should_stop() -> bool:
            nonlocal stopping
            if os.getppid() != parent and not stopping:
                print("make exited; stopping")
                stopping = True
            return stopping

        # A child that dies is restarted with backoff (scripts/supervisor.py); only a signal stops all.
        sup.run_until(should_stop)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sup.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
