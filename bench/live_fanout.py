"""Websocket fan-out of inventory events: changes sent, delivered to every client, lost, latency.

    .venv/bin/python bench/live_fanout.py [--clients 200] [--asgi 1] [--rate 50] [--seconds 30]
                                          [--no-coalesce] [--url ws://127.0.0.1:8000 …]

By default everything runs on loopback from a temporary directory: a private redis-server, a
fresh SQLite database (migrated; synthetic hosts and guests from bench/synthetic_inventory.py,
loopback addresses, never contacted, no worker), ``--asgi`` daphne processes
(vmportal.settings, DEBUG off) against that one Redis, and ``--clients`` websocket clients
(autobahn, logged in as a Viewer through a session cookie) on ``/ws/inventory/``, split
round-robin across the daphne processes.

This process then sends ``--rate`` changes a second for ``--seconds`` through the real sending
path (``core.broadcast.inventory_changed`` from a plain thread: on commit, coalesced, the
channel layer), each a vm.state for a different guest, and counts changes, not messages: a
change is delivered to a client when a message naming that guest with that change's number
reaches it; lost = changes × clients − delivered. Latency is from the send call to the client's
receipt of the message carrying the change (same clock, same process). daphne's CPU seconds and
RSS (from /proc) are read before the clients connect, once they are connected, after the
changes, and after the clients have gone. ``--no-coalesce`` sends every change as its own
message (the way before coalescing), for the figures side by side.

``--url`` (repeatable) uses running portals instead: the environment must then name their
database and Redis (DATABASE_URL, REDIS_URL, DJANGO_SETTINGS_MODULE and keys as they run with),
a Viewer "bench-live" and its session are added there, the changes name existing guests and
no daphne figures are read (their processes are not ours).

The clients run in ``--client-processes`` processes of their own (default 4; autobahn on asyncio;
this process has Django, whose Channels holds autobahn on Twisted; several, and each reports its
CPU seconds, so that the clients are not the part that falls behind — measured: 1.4-2 s each
for 1,000 clients), one session per client unless ``--sessions`` says fewer;
``--rounds N`` connects, sends and disconnects N times against the same daphne processes
(memory a later round does not grow further is reused, not leaked);
``--recheck`` sets VMPORTAL_WS_RECHECK_SECONDS for the daphne processes.

Goals (issue 16): 200 clients, 50 changes/s for 30 s: 0 lost, p95 ≤ 500 ms; 1,000 clients
across two ASGI processes: 0 lost, p95 ≤ 1 s; daphne's RSS back within 20 % of its start.

Figures (2 cores shared with other work; load average in brackets; --rate 50; msgs = median
messages per client; CPU = daphne's CPU seconds from connected to the end of the run, each):

    run                                               lost     p50     p95     max     msgs  CPU        RSS idle → connected → clients gone
    --clients 200 --seconds 30 [2.4]                  0        194 ms  359 ms  941 ms  121   13.7 s     106 → 116 → 117 MiB
    --clients 200 --seconds 15 [4.7]                  0        197 ms  332 ms  588 ms  61    6.7 s      106 → 116 → 117 MiB
    --clients 200 --seconds 15 --no-coalesce [4.6]    78,599   10.2 s  17.3 s  17.9 s  357   14.0 s     106 → 116 → 117 MiB
    --asgi 2 --clients 1000 --seconds 15 [2.0]        30,855   4.3 s   8.4 s   12.6 s  58    15.9 s     106 → 129 → 133 MiB
    --asgi 2 --clients 1000 --seconds 15 --recheck 30 [2.3]  0  428 ms  1.05 s  1.47 s  61    8.5 s      106 → 129 → 132 MiB
    --asgi 2 --clients 1000 --seconds 15 --recheck 60 [6.1]  0  1.25 s  2.48 s  2.89 s  60    8.8 s      106 → 129 → 131 MiB

With 500 sockets a process, the default 5 s re-check (8 queries per socket on daphne's one
sync thread) takes a core: the sockets fall behind and 4 % of the changes had not arrived 10 s
after the last was sent. Under heavier load (average 6-8) the same run did not even connect
all 1,000 (admissions wait behind the checks past daphne's handshake timeout).
Without coalescing (one message per change, as before) daphne falls behind and the changes not
delivered within the 10 s drain count as lost.

The re-check batched (issue 16: one round per process for all its sockets, core.socket_recheck),
side by side with the per-socket re-check it replaced, default 5 s re-check, each pair minutes
apart (4 client processes; CPU = daphne's CPU seconds while the changes went out, each; RSS
idle → connected → settled 10 s after the clients left, MiB):

    run                                           lost    p50     p95     max     connect  CPU     RSS
    --clients 200 --seconds 30  per-socket [3.0]  0       174 ms  293 ms  629 ms  2.2 s    13.3 s  111 → 122 → 124.8 (+12.5 %)
    --clients 200 --seconds 30  batched    [5.3]  0       170 ms  284 ms  427 ms  2.5 s    5.1 s   111 → 122 → 121.3 (+9 %)
    --asgi 2 --clients 1000 --seconds 15
                                per-socket [2.0]  0       6.07 s  8.35 s  11.6 s  12.6 s   20.1 s  111 → 139 → 141 (+27 %)
                                batched    [2.2]  0       256 ms  435 ms  600 ms  6.2 s    7.4 s   111 → 136 → 132 (+19 %)
                                per-socket [7.4]  91,424  9.5 s   14.7 s  17.7 s  223 s    15.6 s  111 → 140 → 142 (+28 %)
                                batched    [5.0]  0       —       7.9 s   —       19 s     ~10 s   111 → 137 → 132 (+19 %)
                                  same daphne, a second round  76,828  8.4 s  11.4 s  12.1 s  —  10 s  → 132.4 (+19 %)

At load 9-15 (other work on the 2 cores) the per-socket re-check did not connect the 1,000 in
240 s, twice; the batched one connected them in 35-78 s but then lost most changes (daphne got
3-4 s of CPU a process while they went out): the figures need a machine that is not saturated.
The batched round costs 24 ms of CPU for 500 sockets (5 queries). What is left is the fan-out
itself, about 0.25 ms of daphne's CPU per socket per message (each socket encodes and frames
its copy). RSS: daphne keeps its peak unless freed memory is trimmed
(socket_recheck.return_freed_memory, once half of the peak's sockets have gone): +24 % without
(batched, before the trim), +19 % with, and a second round against the same processes stays
there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

BASE = Path(__file__).resolve().parent.parent
LABEL = "bench "  # a change's label: "bench <number>", so each client can tell which changes it got


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, *, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(step)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_for(answers, timeout=15, what="redis-server")
    return proc, f"redis://127.0.0.1:{port}/0"


def process_figures(pid: int) -> dict:
    """CPU seconds (user + system) and resident memory (MiB) of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss_kib = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
    return {"cpu_s": round(cpu, 2), "rss_mib": round(rss_kib / 1024, 1)}


def prepare_django(env: dict, *, hosts: int, guests_per_host: int, fresh: bool, sessions: int) -> tuple[list, list]:
    """Set Django up in this process; on a fresh database migrate it and add the synthetic fleet.
    Returns ``sessions`` session cookies of a Viewer ("name=key"), and [(guest id, host id), …]."""
    os.environ.update(env)
    sys.path.insert(0, str(BASE))
    sys.path.append(str(BASE / "bench"))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.utils.module_loading import import_string

    from hosts.models import VirtualMachine

    if fresh:
        call_command("migrate", verbosity=0, interactive=False)
        from synthetic_inventory import make_fleet

        make_fleet(hosts, guests_per_host, prefix="fan")
    user, _ = get_user_model().objects.get_or_create(username="bench-live")
    user.set_password("bench-live-password-1")
    user.save()
    user.groups.add(Group.objects.get_or_create(name="Viewer")[0])
    cookies = []
    for _ in range(sessions):  # one browser each: every socket checks its own session again
        session = import_string(f"{settings.SESSION_ENGINE}.SessionStore")()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={session.session_key}")
    guests = list(VirtualMachine.objects.order_by("pk").values_list("pk", "host_id"))
    if not guests:
        raise SystemExit("no guests to name in the changes")
    return cookies, guests


def make_client_class():
    from autobahn.asyncio.websocket import WebSocketClientProtocol

    class Client(WebSocketClientProtocol):
        """One page's socket: waits for the state, then notes when each change reaches it."""

        def onConnect(self, response):
            self.received: dict[int, float] = {}
            self.messages = 0
            self.close_code = None

        def onMessage(self, payload, isBinary):
            now = time.time()
            message = json.loads(payload)
            if message.get("type") == "inventory.state":
                if not self.factory.ready.done():
                    self.factory.ready.set_result(self)
                return
            if message.get("type") != "inventory.changed":
                return
            self.messages += 1
            for guest in message.get("guests", {}).values():
                label = guest.get("label", "")
                if label.startswith(LABEL):
                    self.received.setdefault(int(label[len(LABEL):]), now)

        def onClose(self, wasClean, code, reason):
            self.close_code = code
            if not self.factory.ready.done():
                self.factory.ready.set_exception(RuntimeError(f"closed before the state: {code} {reason}"))

    return Client


async def open_clients(urls: list[str], numbers: range, cookies: list[str], *, parallel: int = 10) -> list:
    """Clients ``numbers`` on /ws/inventory/, round-robin over ``urls``, each past its first state."""
    from autobahn.asyncio.websocket import WebSocketClientFactory

    Client = make_client_class()
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(parallel)
    opened: list[float] = []
    started = time.monotonic()

    async def one(n: int):
        base = urlsplit(urls[n % len(urls)])
        origin = f"http://{base.hostname}:{base.port}"
        factory = WebSocketClientFactory(f"ws://{base.hostname}:{base.port}/ws/inventory/", origin=origin,
                                         headers={"Cookie": cookies[n % len(cookies)]})
        factory.protocol = Client
        # Hundreds of handshakes at once on a busy machine take longer than autobahn's default.
        factory.setProtocolOptions(openHandshakeTimeout=120, closeHandshakeTimeout=10)
        factory.ready = loop.create_future()
        async with gate:
            await loop.create_connection(factory, base.hostname, base.port)
            client = await asyncio.wait_for(factory.ready, 120)
            opened.append(time.monotonic())
            if len(opened) % 100 == 0:
                print(f"{len(opened)} clients connected ({opened[-1] - started:.1f} s)", file=sys.stderr, flush=True)
            return client

    return await asyncio.gather(*(one(n) for n in numbers))


def publish(*, rate: float, seconds: float, guests: list, sent: dict, start: threading.Event) -> None:
    """In a plain thread (as a worker sends): ``rate`` changes a second, vm.state of one guest each."""
    from core import broadcast

    start.wait()
    total = int(rate * seconds)
    t0 = time.monotonic()
    for n in range(total):
        delay = t0 + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the sending schedule itself, not a wait for a condition
        vm_id, host_id = guests[n % len(guests)]
        state = "paused" if n % 2 else "running"
        sent[n] = time.time()
        broadcast.inventory_changed(host_id=host_id, guests={vm_id: (state, f"{LABEL}{n}")})
    broadcast.flush_pending()


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def log_counts(paths: list[Path]) -> dict:
    text = "".join(path.read_text(errors="replace") for path in paths if path.exists())
    at = text.find("Exception inside application")
    if at != -1:  # the first one, to see what it was
        print(text[at:at + 4000], file=sys.stderr)
    return {"over_capacity": text.count("over capacity"), "exceptions": text.count("Exception inside application")}


async def client_worker(urls: list[str], numbers: range, cookies: list[str], drain: float, connect_timeout: float) -> None:
    """The clients, in a process of their own (autobahn on asyncio; Django's process has it on
    Twisted): "ready" once all are connected, then on a line "report <file of send times>" the
    figures as one JSON line."""
    try:
        clients = await asyncio.wait_for(open_clients(urls, numbers, cookies), connect_timeout)
    except (TimeoutError, RuntimeError, OSError) as exc:
        print(f"failed: {type(exc).__name__} {exc}", flush=True)
        return
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    sent = {int(k): v for k, v in json.loads(Path(line.split(" ", 1)[1].strip()).read_text()).items()}
    total = len(sent)
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline and any(len(c.received) < total for c in clients):
        await asyncio.sleep(0.1)
    latencies, delivered, messages = [], [], []
    for client in clients:
        got = [seq for seq in client.received if seq in sent]
        delivered.append(len(got))
        messages.append(client.messages)
        latencies.extend(client.received[seq] - sent[seq] for seq in got)
    closed_early = sum(1 for c in clients if c.close_code is not None)
    for client in clients:
        client.sendClose()
    await asyncio.sleep(1.0)  # the close handshakes
    print(json.dumps({
        "changes_sent": total, "delivered": delivered, "messages": messages,
        "latencies_ms": [round(value * 1000, 1) for value in latencies], "closed_during_run": closed_early,
        # The clients' own process: a busy machine can make it, not daphne, the slow part.
        "cpu_s": round(time.process_time(), 1),
    }), flush=True)


def merge_reports(reports: list[dict]) -> dict:
    """The figures of all client processes together."""
    delivered = [n for report in reports for n in report["delivered"]]
    messages = [n for report in reports for n in report["messages"]]
    latencies = [ms for report in reports for ms in report["latencies_ms"]]
    total = reports[0]["changes_sent"]
    return {
        "clients": len(delivered), "changes_sent": total,
        "delivered_per_client": {"min": min(delivered), "median": statistics.median(delivered), "max": max(delivered)},
        "lost": total * len(delivered) - sum(delivered),
        "messages_per_client": {"min": min(messages), "median": statistics.median(messages), "max": max(messages)},
        "latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                       "max": max(latencies) if latencies else None},
        "closed_during_run": sum(report["closed_during_run"] for report in reports),
        "client_processes": len(reports),
        "client_worker_cpu_s": [report["cpu_s"] for report in reports],
    }


def run_clients(args, urls, cookies, guests, pids, figures, workdir: Path) -> dict:
    figures["before_clients"] = {str(pid): process_figures(pid) for pid in pids}
    cookie_file = workdir / "cookies.json"
    cookie_file.write_text(json.dumps(cookies))
    t0 = time.monotonic()
    # Several client processes (each reads its sockets on one core at most), so the clients are
    # not what falls behind.
    count = max(1, min(args.client_processes, args.clients))
    workers = [subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--client-worker", "--clients", str(args.clients),
         "--worker-index", str(index), "--client-processes", str(count),
         "--drain", str(args.drain), "--connect-timeout", str(args.connect_timeout), "--cookies", str(cookie_file),
         *sum((["--url", url] for url in urls), [])],
        cwd=BASE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for index in range(count)]
    try:
        for worker in workers:
            ready = worker.stdout.readline()
            if ready.strip() != "ready":
                raise SystemExit(f"the clients did not connect: {ready!r}")
        connect_s = time.monotonic() - t0
        figures["connected"] = {str(pid): process_figures(pid) for pid in pids}
        sent: dict[int, float] = {}
        go = threading.Event()
        go.set()
        load_before = os.getloadavg()[0]
        publish_started = time.monotonic()
        publish(rate=args.rate, seconds=args.seconds, guests=guests, sent=sent, start=go)
        publish_s = time.monotonic() - publish_started
        times = workdir / "sent.json"
        times.write_text(json.dumps(sent))
        for worker in workers:
            worker.stdin.write(f"report {times}\n")
            worker.stdin.flush()
        reports = [json.loads(worker.stdout.readline()) for worker in workers]
        figures["after_changes"] = {str(pid): process_figures(pid) for pid in pids}
        for worker in workers:
            worker.wait(timeout=60)
    finally:
        for worker in workers:
            stop(worker)
    result = merge_reports(reports)
    result["publish_s"] = round(publish_s, 1)  # longer than --seconds: the sender fell behind its schedule
    result["load_average"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]  # as the changes start, end
    return {**result, "asgi": len(urls), "connect_s": round(connect_s, 1), "rate": args.rate,
            "seconds": args.seconds, "coalesced": not args.no_coalesce}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--asgi", type=int, default=1, help="daphne processes against the one Redis")
    parser.add_argument("--rate", type=float, default=50.0, help="changes a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--drain", type=float, default=10.0, help="longest wait for the last changes")
    parser.add_argument("--connect-timeout", type=float, default=240.0, help="longest wait for all clients to connect")
    parser.add_argument("--hosts", type=int, default=25)
    parser.add_argument("--guests-per-host", type=int, default=40)
    parser.add_argument("--no-coalesce", action="store_true", help="one message per change (as before)")
    parser.add_argument("--url", action="append", default=[], help="a running portal (repeatable)")
    parser.add_argument("--client-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cookies", default="", help=argparse.SUPPRESS)
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--client-processes", type=int, default=4, help="processes the clients are split across")
    parser.add_argument("--sessions", type=int, default=0,
                        help="browser sessions the clients share (default: one per client)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="connect the clients, send, disconnect this many times against the same daphne processes")
    parser.add_argument("--recheck", type=float, default=None,
                        help="VMPORTAL_WS_RECHECK_SECONDS for the daphne processes (default: the setting's)")
    args = parser.parse_args()
    if args.client_worker:
        numbers = range(args.worker_index, args.clients, max(1, args.client_processes))
        asyncio.run(client_worker(args.url, numbers, json.loads(Path(args.cookies).read_text()), args.drain,
                                  args.connect_timeout))
        return 0
    if not (1 <= args.rounds <= 10 and 1 <= args.client_processes <= 16):
        parser.error("--rounds 1..10, --client-processes 1..16")
    if not (1 <= args.clients <= 5000 and 1 <= args.asgi <= 8 and 0 < args.rate <= 1000 and 0 < args.seconds <= 600):
        parser.error("--clients 1..5000, --asgi 1..8, --rate 0..1000, --seconds 0..600")

    sessions = max(1, min(args.sessions or args.clients, args.clients))
    workdir = Path(tempfile.mkdtemp(prefix="live-fanout-"))
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    try:
        if args.url:
            urls = args.url
            cookies, guests = prepare_django({}, hosts=0, guests_per_host=0, fresh=False, sessions=sessions)
            pids: list[int] = []
        else:
            from cryptography.fernet import Fernet

            redis_proc, redis_url = start_redis(workdir)
            procs.append(redis_proc)
            ports = [free_port() for _ in range(args.asgi)]
            env = {
                "DJANGO_SETTINGS_MODULE": "vmportal.settings",
                "DJANGO_SECRET_KEY": "bench-secret-key-live-fanout",
                "VMPORTAL_SECRETS_KEY": Fernet.generate_key().decode(),
                "VMPORTAL_AUDIT_KEY": "bench-audit-key",
                "DATABASE_URL": f"sqlite:///{workdir / 'portal.sqlite3'}",
                "REDIS_URL": redis_url,
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
                "DJANGO_STATIC_ROOT": str(workdir / "static"),
                "VMPORTAL_SITE_ORIGINS": ",".join(f"http://127.0.0.1:{port}" for port in ports),
                "PYTHONPATH": str(BASE),
            }
            child_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VMPORTAL_"))}, **env}
            child_env.pop("DJANGO_DEBUG", None)
            if args.recheck is not None:
                child_env["VMPORTAL_WS_RECHECK_SECONDS"] = str(args.recheck)
            cookies, guests = prepare_django(env, hosts=args.hosts, guests_per_host=args.guests_per_host,
                                             fresh=True, sessions=sessions)
            for port in ports:
                log = workdir / f"daphne-{port}.log"
                logs.append(log)
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                     # A thousand handshakes in a row on a busy machine outlast daphne's default 5 s.
                     "--websocket_connect_timeout", "60", "vmportal.asgi:application"],
                    cwd=BASE, env=child_env, stdout=log.open("w"), stderr=subprocess.STDOUT))
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            for url in urls:
                def serving(url=url):
                    # The port answers (the pages need collected static files; the sockets do not).
                    try:
                        with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=0.5):
                            return True
                    except OSError:
                        return False

                try:
                    wait_for(serving, timeout=60, what=f"daphne at {url}", step=0.2)
                except SystemExit:
                    print("".join(log.read_text(errors="replace")[-3000:] for log in logs), file=sys.stderr)
                    raise
            pids = [proc.pid for proc in procs[1:]]
        if args.no_coalesce:
            from core import broadcast

            broadcast.COALESCED_GROUPS.clear()
        rounds = []
        for _ in range(args.rounds):
            figures: dict = {}
            result = run_clients(args, urls, cookies, guests, pids, figures, workdir)
            result["sessions"], result["recheck_s"] = sessions, args.recheck
            if pids:
                # Idle again, the clients gone: does daphne's memory come back? (At 2 s, and once
                # the server has surely dropped the closed connections.)
                time.sleep(2.0)
                figures["clients_gone"] = {str(pid): process_figures(pid) for pid in pids}
                time.sleep(8.0)
                figures["settled"] = {str(pid): process_figures(pid) for pid in pids}
                result["daphne"] = figures
                result["daphne_publish_cpu_s"] = {
                    pid: round(figures["after_changes"][pid]["cpu_s"] - figures["connected"][pid]["cpu_s"], 2)
                    for pid in figures["connected"]}
                result["logs"] = log_counts(logs)
            rounds.append({"lost": result["lost"], "p95_ms": result["latency_ms"]["p95"],
                           "rss_settled_mib": {pid: f["rss_mib"] for pid, f in figures.get("settled", {}).items()}})
        # Each round's clients connect to the same daphne processes: memory that a second round
        # does not grow further is reused, not leaked.
        result["rounds"] = rounds
        print(json.dumps(result))
        latency = result["latency_ms"]
        print(f"\n{result['clients']} clients on {result['asgi']} ASGI process(es), "
              f"{'coalesced' if result['coalesced'] else 'one message per change'}: "
              f"{result['changes_sent']} changes sent ({args.rate:g}/s for {args.seconds:g} s), "
              f"delivered per client min {result['delivered_per_client']['min']} / median "
              f"{result['delivered_per_client']['median']}, lost {result['lost']}, "
              f"messages per client (median) {result['messages_per_client']['median']}, "
              f"latency p50 {latency['p50']} ms / p95 {latency['p95']} ms / max {latency['max']} ms; "
              f"connected in {result['connect_s']} s, sent in {result['publish_s']} s, "
              f"client process CPU {result['client_worker_cpu_s']} s, load average {result['load_average']}")
        for stage, per_pid in figures.items():
            print(f"  daphne {stage:>13}: " + "; ".join(
                f"pid {pid} cpu {f['cpu_s']} s rss {f['rss_mib']} MiB" for pid, f in per_pid.items()))
        if len(rounds) > 1:
            for n, one in enumerate(rounds, 1):
                print(f"  round {n}: lost {one['lost']}, p95 {one['p95_ms']} ms, daphne rss settled "
                      + "; ".join(f"{mib} MiB" for mib in one["rss_settled_mib"].values()))
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
