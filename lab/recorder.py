"""Heartbeat recorder: one listening UNIX socket per guest serial port.

QEMU connects to ``serial/<guest>.sock`` (``<serial type='unix' mode='connect'>``);
every complete line the guest prints is appended to ``hb/<guest>.log`` as
``<unix time> <line>``. During a live migration the source and destination
QEMU are connected at the same time; both are read, so the log shows exactly
when the guest stopped printing on one host and resumed on the other. The guest has
one serial port, so what either QEMU sends is one stream: a line the guest began on the
source and ended on the destination (the switch-over came mid-line) is still one line.

New guests are announced by creating ``serial/<guest>.want``; the recorder
picks them up within 0.1 s (``ensure_socket`` waits for it).
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

from lab import config
from lab.system import LabError, pid_alive, read_pid


class GuestStream:
    """The bytes of one guest's serial port, from whichever QEMU sends them, cut into lines."""

    def __init__(self) -> None:
        self.pending = bytearray()

    def feed(self, data: bytes) -> list[str]:
        """Append ``data``; return the complete non-empty lines it finished."""
        self.pending.extend(data)
        lines = []
        while b"\n" in self.pending:
            line, _, rest = bytes(self.pending).partition(b"\n")
            self.pending[:] = rest
            text = line.decode("ascii", "replace").strip()
            if text:
                lines.append(text)
        return lines


def main() -> int:
    p = config.paths()
    p.serial.mkdir(parents=True, exist_ok=True)
    p.heartbeats.mkdir(parents=True, exist_ok=True)
    sel = selectors.DefaultSelector()
    listening: dict[str, socket.socket] = {}
    streams: dict[str, GuestStream] = {}  # per guest, not per connection: see the module's docstring
    logs: dict[str, object] = {}
    stop = False

    def on_term(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def scan() -> None:
        for want in p.serial.glob("*.want"):
            name = want.name[: -len(".want")]
            if name in listening:
                continue
            path = p.serial / f"{name}.sock"
            path.unlink(missing_ok=True)
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(str(path))
            srv.listen(8)
            srv.setblocking(False)
            sel.register(srv, selectors.EVENT_READ, ("listen", name))
            listening[name] = srv
            logs[name] = open(p.heartbeats / f"{name}.log", "a", buffering=1)
            streams[name] = GuestStream()

    last_scan = 0.0
    while not stop:
        now = time.monotonic()
        if now - last_scan > 0.1:
            scan()
            last_scan = now
        for key, _ in sel.select(timeout=0.1):
            kind, name = key.data
            if kind == "listen":
                conn, _ = key.fileobj.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, ("conn", name))
                continue
            conn = key.fileobj
            try:
                data = conn.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            ts = time.time()
            if not data:
                sel.unregister(conn)
                conn.close()
                continue
            for text in streams[name].feed(data):
                logs[name].write(f"{ts:.6f} {text}\n")
    for name, srv in listening.items():
        srv.close()
        (p.serial / f"{name}.sock").unlink(missing_ok=True)
    return 0


def running_pid() -> int | None:
    pid = read_pid(config.paths().recorder_pid)
    if pid and pid_alive(pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if b"lab.recorder" in cmdline:
            return pid
    return None


def start() -> int:
    """Start the recorder daemon unless it already runs; return its PID."""
    pid = running_pid()
    if pid:
        return pid
    p = config.paths()
    p.logs.mkdir(parents=True, exist_ok=True)
    import subprocess

    # sys.executable is the real interpreter, not a version-manager shim, so
    # the PID we record is the recorder's own.
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.recorder"],
        cwd=str(config.PROJECT_DIR),
        stdin=subprocess.DEVNULL,
        stdout=open(p.logs / "recorder.log", "a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "VMPORTAL_LAB_DIR": str(p.root)},
    )
    p.recorder_pid.write_text(str(proc.pid))
    return proc.pid


def ensure_socket(name: str, timeout: float = 5.0) -> Path:
    p = config.paths()
    p.serial.mkdir(parents=True, exist_ok=True)
    (p.serial / f"{name}.want").touch()
    sock = p.serial / f"{name}.sock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.exists():
            return sock
        time.sleep(0.02)
    raise LabError(f"the heartbeat recorder did not open {sock.name}; see {p.logs / 'recorder.log'}")


if __name__ == "__main__":
    sys.exit(main())
