"""Inventory events: how pending events merge (a table), what one socket hears of them, and the
coalescer in core.broadcast (at most one send per group per window, nothing dropped)."""

from __future__ import annotations

import threading
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from core import broadcast
from core.live_events import COALESCE_S, inventory_event, merge_all, merge_inventory, unseen_hosts, visible_part
from tests.unit.core.test_core_broadcast_loop import in_plain_thread
from tests.waiting import wait_until


def ev(host_id=None, *, hosts_changed=False, status=None, guests=None):
    return inventory_event(host_id=host_id, hosts_changed=hosts_changed,
                           host=None if status is None else {"status": status, "label": status.title()},
                           guests={g: {"host_id": host_id, "state": s, "label": s.title()}
                                   for g, s in (guests or {}).items()})


MERGES = [
    # (events in order, host_ids, hosts_changed, everything, host statuses, guest states, changes)
    ([ev(1)], [1], False, False, {}, {}, 1),
    ([ev(2), ev(1), ev(2)], [1, 2], False, False, {}, {}, 3),
    ([ev(1), ev(2, hosts_changed=True)], [1, 2], True, False, {}, {}, 2),
    ([ev(1, hosts_changed=True), ev(1)], [1], True, False, {}, {}, 2),  # a flag is never lost
    ([ev(1), ev()], [1], False, True, {}, {}, 2),  # no host named: everything
    ([ev(1, status="unreachable"), ev(1, status="reachable")], [1], False, False, {"1": "reachable"}, {}, 2),
    ([ev(1, status="unreachable"), ev(2, status="reachable")], [1, 2], False, False,
     {"1": "unreachable", "2": "reachable"}, {}, 2),
    ([ev(1, guests={10: "running"}), ev(1, guests={10: "paused", 11: "shutoff"}), ev(2, guests={20: "running"})],
     [1, 2], False, False, {}, {"10": "paused", "11": "shutoff", "20": "running"}, 3),  # last state per guest
    ([ev(1, guests={10: "running"}), ev(1)], [1], False, False, {}, {"10": "running"}, 2),
]


@pytest.mark.parametrize("events, host_ids, hosts_changed, everything, statuses, states, changes", MERGES)
def test_merged_events_keep_every_host_flag_and_the_last_state_of_each_object(
        events, host_ids, hosts_changed, everything, statuses, states, changes):
    merged = merge_all(events)
    assert merged["type"] == "inventory.changed"
    assert merged["host_ids"] == host_ids
    assert merged["hosts_changed"] is hosts_changed and merged["everything"] is everything
    assert {k: v["status"] for k, v in merged["hosts"].items()} == statuses
    assert {k: v["state"] for k, v in merged["guests"].items()} == states
    assert merged["changes"] == changes


def test_merging_does_not_change_the_events_merged():
    first, second = ev(1, guests={10: "running"}), ev(1, guests={10: "paused"})
    merge_inventory(merge_inventory(None, first), second)
    assert first["guests"]["10"]["state"] == "running" and second["guests"]["10"]["state"] == "paused"


VISIBLE = [
    # (event, hosts the socket may see, what it hears: host_ids, status keys, guest keys — None: nothing)
    (ev(1), {1, 2}, ([1], [], [])),
    (ev(3), {1, 2}, None),
    (ev(), {1}, ([], [], [])),  # everything: every page, whoever
    (merge_all([ev(1, status="reachable"), ev(3, status="unreachable")]), {1}, ([1], ["1"], [])),
    (merge_all([ev(1, guests={10: "running"}), ev(3, guests={30: "running"})]), {1}, ([1], [], ["10"])),
    (merge_all([ev(3, guests={30: "running"}), ev()]), {1}, ([], [], [])),  # everything, but not host 3's guest
]


@pytest.mark.parametrize("event, visible, expected", VISIBLE)
def test_a_socket_hears_only_the_hosts_it_may_see_and_their_guests(event, visible, expected):
    part = visible_part(event, visible)
    if expected is None:
        assert part is None
        return
    host_ids, statuses, guests = expected
    assert part["host_ids"] == host_ids
    assert sorted(part["hosts"]) == statuses and sorted(part["guests"]) == guests


@pytest.mark.parametrize("event, visible, expected", [
    (ev(5, hosts_changed=True), {1}, True),
    (ev(5), {1}, False),
    (ev(1, hosts_changed=True), {1}, False),
    (ev(hosts_changed=True), {1}, False),
])
def test_a_socket_reads_its_hosts_again_only_for_a_host_it_does_not_know_in_a_changed_set(event, visible, expected):
    assert unseen_hosts(event, visible) is expected


class RecordingLayer:
    """Stands in for the channel layer: notes when each group_send came, and what it sent."""

    def __init__(self):
        self.sent: list[tuple[float, str, dict]] = []
        self.lock = threading.Lock()

    async def group_send(self, group, message):
        with self.lock:
            self.sent.append((time.monotonic(), group, message))

    def guests(self) -> set[str]:
        with self.lock:
            return {g for _, _, m in self.sent for g in m["guests"]}


@pytest.fixture
def recording(monkeypatch):
    layer = RecordingLayer()
    # Nothing an earlier test left held (a pending event, an open window, a timer still to fire)
    # reaches this layer: forgetting drops them, and a stale timer finds its token gone.
    broadcast._coalescer._forget()
    monkeypatch.setattr(broadcast, "get_channel_layer", lambda: layer)
    yield layer
    broadcast._coalescer._forget()


@in_plain_thread
def test_a_burst_to_the_inventory_group_is_sent_as_few_messages_a_window_apart_with_every_change(recording):
    for n in range(50):
        broadcast._send(broadcast.INVENTORY_GROUP, ev(7, guests={n: "running"}))
    broadcast.flush_pending()  # the rest of the burst, as a work horse sends it before it exits
    messages = [m for _, _, m in recording.sent]
    assert sorted(int(g) for m in messages for g in m["guests"]) == list(range(50))
    assert sum(m["changes"] for m in messages) == 50
    assert 1 <= len(messages) <= 3, [m["changes"] for m in messages]


@in_plain_thread
def test_events_a_window_apart_are_not_held_and_events_within_one_wait_for_its_end(recording):
    broadcast._send(broadcast.INVENTORY_GROUP, ev(7, guests={1: "running"}))
    wait_until(lambda: recording.guests() == {"1"}, timeout=5, what="the first event")
    broadcast._send(broadcast.INVENTORY_GROUP, ev(7, guests={2: "running"}))
    broadcast._send(broadcast.INVENTORY_GROUP, ev(7, guests={3: "running"}))
    wait_until(lambda: recording.guests() == {"1", "2", "3"}, timeout=5, what="the next two")
    (first, _, one), (second, _, two) = recording.sent
    assert set(one["guests"]) == {"1"} and set(two["guests"]) == {"2", "3"}
    assert second - first >= COALESCE_S * 0.99  # the next send waited for the window


@in_plain_thread
def test_groups_other_than_the_inventory_are_sent_at_once_one_message_each():
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("job.4242", channel)
    for n in range(3):
        broadcast._send("job.4242", {"type": "job.log", "entry": {"n": n}})
    assert [async_to_sync(layer.receive)(channel)["entry"]["n"] for _ in range(3)] == [0, 1, 2]


def test_a_work_horse_sends_what_it_holds_after_its_job(monkeypatch):
    from core import worker

    flushed = []
    monkeypatch.setattr(worker, "flush_pending", lambda: flushed.append(True))
    monkeypatch.setattr(worker.Worker, "perform_job", lambda self, job, queue: "done")
    assert worker.PortalWorker.perform_job(object.__new__(worker.PortalWorker), None, None) == "done"
    assert flushed == [True]


def test_sockets_closing_together_use_the_channel_layer_a_bounded_number_at_a_time():
    """redis-py raises once its pool's connections are all in use: a thousand sockets leaving
    their groups at once must queue for the layer, not fail to leave."""
    import asyncio

    from core import consumers

    class CountingLayer:
        now = peak = calls = 0

        async def group_discard(self, group, channel):
            CountingLayer.now += 1
            CountingLayer.peak = max(CountingLayer.peak, CountingLayer.now)
            await asyncio.sleep(0.001)
            CountingLayer.now -= 1
            CountingLayer.calls += 1

    async def close_all():
        sockets = []
        for n in range(200):
            socket = consumers.RoleGatedConsumer()
            socket.channel_layer, socket.channel_name = CountingLayer(), f"specific.x!{n}"
            sockets.append(socket)
        await asyncio.gather(*(s.leave_groups("inventory", f"user.{n}") for n, s in enumerate(sockets)))

    async_to_sync(close_all)()
    assert CountingLayer.calls == 400
    assert 1 < CountingLayer.peak <= consumers.LAYER_CALLS_AT_ONCE


@in_plain_thread
def test_a_forked_work_horse_does_not_inherit_what_its_parent_held(recording, monkeypatch):
    coalescer = broadcast._coalescer
    dead_loop = type("DeadLoop", (), {"is_closed": lambda self: False, "is_running": lambda self: True})()
    coalescer._pending[(dead_loop, broadcast.INVENTORY_GROUP)] = ev(9)  # the parent's, for its loop
    monkeypatch.setattr(coalescer, "_pid", -1)  # as a work horse sees it after fork()
    broadcast._send(broadcast.INVENTORY_GROUP, ev(7, guests={5: "running"}))
    broadcast.flush_pending(timeout=1.0)  # would wait on the parent's loop, and time out, had it kept it
    wait_until(lambda: recording.guests() == {"5"}, timeout=5, what="the horse's own event")
    assert [m["host_ids"] for _, _, m in recording.sent] == [[7]]
    assert all(key[0] is not dead_loop for key in coalescer._pending)
