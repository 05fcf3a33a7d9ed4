"""Scale-out: two ASGI servers (daphne) against one Redis; an event sent once, by a command as a
worker would send it, reaches a websocket client on each of them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.e2e.conftest import copy_database, free_port, manage, stop
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PROJECT = Path(__file__).resolve().parents[2]

# The clients run in a process of their own: autobahn on asyncio (daphne, imported by Channels'
# test tools in this process, holds autobahn on Twisted). One client per URL; "ready" once each
# has its first state, then one JSON line per inventory event: [index of its server, event].
LISTENER = r"""
import asyncio, json, sys
from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

urls, cookie = sys.argv[1].split(","), sys.argv[2]

class Client(WebSocketClientProtocol):
    def onMessage(self, payload, isBinary):
        message = json.loads(payload)
        if message["type"] == "inventory.state" and not self.factory.ready.done():
            self.factory.ready.set_result(True)
        elif message["type"] == "inventory.changed":
            print(json.dumps([self.factory.index, message]), flush=True)

    def onClose(self, wasClean, code, reason):
        if not self.factory.ready.done():
            self.factory.ready.set_exception(RuntimeError(f"closed: {code} {reason}"))

async def main():
    loop = asyncio.get_running_loop()
    for index, url in enumerate(urls):
        host, port = url.rsplit(":", 1)
        factory = WebSocketClientFactory(f"ws://{host}:{port}/ws/inventory/", origin=f"http://{host}:{port}",
                                         headers={"Cookie": cookie})
        factory.protocol, factory.index, factory.ready = Client, index, loop.create_future()
        await loop.create_connection(factory, host, int(port))
        await asyncio.wait_for(factory.ready, 30)
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_an_event_sent_once_reaches_a_client_on_each_of_two_asgi_servers(portal_template, redis_url, tmp_path):
    copy_database(portal_template.workdir / "portal.sqlite3", tmp_path / "portal.sqlite3")
    with redis.Redis.from_url(redis_url) as client:
        client.flushall()
    ports = [free_port(), free_port()]
    env = {**portal_template.env, "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
           "VMPORTAL_SITE_ORIGINS": ",".join(f"http://127.0.0.1:{port}" for port in ports)}
    subprocess.run([sys.executable, "bench/synthetic_inventory.py", "--hosts", "1", "--guests-per-host", "1"],
                   cwd=PROJECT, env=env, check=True, capture_output=True)
    out = manage(env, "shell", "-c", (
        "import json; from django.conf import settings; from django.contrib.auth import get_user_model, "
        "SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY; from django.utils.module_loading import import_string; "
        "from hosts.models import Host; u = get_user_model().objects.get(username='admin'); "
        "s = import_string(settings.SESSION_ENGINE + '.SessionStore')(); s[SESSION_KEY] = str(u.pk); "
        "s[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'; "
        "s[HASH_SESSION_KEY] = u.get_session_auth_hash(); s.create(); "
        "print(json.dumps([settings.SESSION_COOKIE_NAME + '=' + s.session_key, Host.objects.get().pk]))"))
    cookie, host_id = json.loads(out.stdout.strip().splitlines()[-1])

    logs = [open(tmp_path / f"daphne-{port}.log", "w") for port in ports]
    servers = [subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                 "vmportal.asgi:application"], cwd=PROJECT, env=env, stdout=log,
                                stderr=subprocess.STDOUT) for port, log in zip(ports, logs)]
    listener = None
    try:
        for port in ports:
            wait_until(lambda port=port: listening(port), timeout=30, what=f"daphne on port {port}")
        listener = subprocess.Popen([sys.executable, "-c", LISTENER,
                                     ",".join(f"127.0.0.1:{port}" for port in ports), cookie],
                                    cwd=PROJECT, env=env, stdout=subprocess.PIPE, text=True)
        assert listener.stdout.readline().strip() == "ready"
        # Sent once, from a process of its own (as a worker sends), through core.broadcast.
        manage(env, "shell", "-c", f"from core import broadcast; broadcast.inventory_changed(host_id={host_id})")
        heard = [json.loads(listener.stdout.readline()) for _ in ports]
    finally:
        for proc in ([listener] if listener else []) + servers:
            stop(proc)
        for log in logs:
            log.close()
    assert sorted(index for index, _ in heard) == [0, 1]  # one client on each server
    assert all(event["host_ids"] == [host_id] and not event["everything"] for _, event in heard)
    for port in ports:
        assert "Exception inside application" not in (tmp_path / f"daphne-{port}.log").read_text()
