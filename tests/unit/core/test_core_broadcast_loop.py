"""Events sent from plain threads (workers, jobs) go through one event loop per process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import wraps

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from core import broadcast


def in_plain_thread(test):
    """Run the test in a thread of its own, without an event loop: the case being tested (a
    worker's or a job's thread), whatever the test runner's main thread has running (Playwright's
    session-wide loop when the browser tests ran first)."""

    @wraps(test)
    def run(*args, **kwargs):
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(test, *args, **kwargs).result()

    return run


def _listen(group: str) -> str:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)
    return channel


@in_plain_thread
def test_events_from_a_plain_thread_arrive_and_share_one_loop():
    layer = get_channel_layer()
    channel = _listen("loop.test")
    broadcast._send("loop.test", {"type": "x.one", "n": 1})
    loop = broadcast._process_loop._loop
    broadcast._send("loop.test", {"type": "x.two", "n": 2})
    assert loop is not None and broadcast._process_loop._loop is loop
    assert [async_to_sync(layer.receive)(channel)["n"] for _ in range(2)] == [1, 2]  # in order


@in_plain_thread
def test_a_forked_process_starts_a_loop_of_its_own(monkeypatch):
    broadcast._send("loop.test", {"type": "x.one"})
    parent = broadcast._process_loop._loop
    monkeypatch.setattr(broadcast._process_loop, "_pid", -1)  # as a work horse sees it after fork()
    channel = _listen("loop.fork")
    broadcast._send("loop.fork", {"type": "x.child", "n": 3})
    assert broadcast._process_loop._loop is not parent
    assert async_to_sync(get_channel_layer().receive)(channel)["n"] == 3
