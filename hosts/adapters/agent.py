"""The QEMU guest agent through libvirt: does the guest have its channel, and how long did it
not answer while it moved (the pause the guest itself saw).

``PauseProbe`` pings the guest (``guest-ping`` through ``libvirt_qemu.qemuAgentCommand``) from
one thread per host — the source and the destination — every ``interval_s``, and keeps the time
of every answer. Each thread opens a libvirt connection of its own: on the connection that
carries the migrate call, libvirt answers an agent command only once the migration ended. A ping that the guest cannot answer (paused for the switch-over, not running
on that host yet or any more) blocks only its own host's thread, so the longest gap between
answers on either host is the pause the guest saw, at the probe's resolution. libvirt's own
``downtime`` is QEMU's view of the switch-over; this is the guest's.

No Django here: callers get dataclasses and booleans.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import libvirt
import libvirt_qemu

AGENT_CHANNEL = "org.qemu.guest_agent.0"
PING = '{"execute":"guest-ping"}'
# libvirt's agent timeout is in whole seconds (0 = do not wait, which a busy agent fails).
PING_TIMEOUT_S = 1
DEFAULT_INTERVAL_S = 0.05  # 20 Hz


@dataclass(frozen=True)
class AgentChannel:
    """The guest's agent channel as its live definition shows it ("" state: libvirt did not say)."""

    present: bool
    state: str = ""  # "connected" | "disconnected" | ""

    @property
    def connected(self) -> bool:
        return self.present and self.state != "disconnected"


def parse_agent_channel(domain_xml: str) -> AgentChannel:
    """Find ``<channel><target type='virtio' name='org.qemu.guest_agent.0' state=…/>`` in a definition."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return AgentChannel(present=False)
    for target in root.findall("./devices/channel/target"):
        if target.get("type") == "virtio" and target.get("name") == AGENT_CHANNEL:
            return AgentChannel(present=True, state=target.get("state", ""))
    return AgentChannel(present=False)


def agent_channel(conn: libvirt.virConnect, domain_uuid: str) -> AgentChannel:
    """The guest's agent channel on this host; absent when the guest is not there or libvirt fails."""
    try:
        return parse_agent_channel(conn.lookupByUUIDString(domain_uuid).XMLDesc(0))
    except libvirt.libvirtError:
        return AgentChannel(present=False)


def ping(conn: libvirt.virConnect, domain_uuid: str, *, timeout_s: int = PING_TIMEOUT_S) -> bool:
    """Did the guest's agent answer ``guest-ping`` on this host just now?"""
    try:
        dom = conn.lookupByUUIDString(domain_uuid)
        libvirt_qemu.qemuAgentCommand(dom, PING, timeout_s, 0)
    except libvirt.libvirtError:
        return False
    return True


def longest_gap(times: Sequence[float]) -> float | None:
    """The longest time between consecutive answers (any order given); None with fewer than two."""
    ordered = sorted(times)
    if len(ordered) < 2:
        return None
    return max(later - earlier for earlier, later in zip(ordered, ordered[1:]))


@dataclass(frozen=True)
class AgentPause:
    """What the probe saw: every answer's time (monotonic seconds) per host, and the longest gap."""

    answers: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # host label -> answer times
    started: float = 0.0
    stopped: float = 0.0

    @property
    def count(self) -> int:
        return sum(len(t) for t in self.answers.values())

    @property
    def max_gap_s(self) -> float | None:
        return longest_gap([t for times in self.answers.values() for t in times])

    def answered_on(self, host: str) -> bool:
        return bool(self.answers.get(host))


class PauseProbe:
    """Ping the guest on each host from a thread of its own until ``stop()``.

    ``openers``: host label -> a callable opening that host's libvirt connection for the probe
    (called in the probe's thread, so opening it does not delay the caller; a failure leaves
    that host without answers, said in ``errors``). The ``channel_from`` host's thread first
    reads the guest's definition: without an agent channel (``channel``) nothing is pinged.
    Start it early — before the migrate call — so the source answers before the switch-over.
    """

    def __init__(self, openers: Mapping[str, Callable[[], libvirt.virConnect]], domain_uuid: str, *,
                 channel_from: str = "source", interval_s: float = DEFAULT_INTERVAL_S,
                 timeout_s: int = PING_TIMEOUT_S, clock=time.monotonic):
        self._openers = dict(openers)
        self._uuid = domain_uuid
        self._channel_from = channel_from
        self._interval = interval_s
        self._timeout = timeout_s
        self._clock = clock
        self._stop = threading.Event()
        self._channel_read = threading.Event()
        self.channel: AgentChannel | None = None  # None: not read (yet, or the connection failed)
        self._answers: dict[str, list[float]] = {name: [] for name in self._openers}
        self.errors: dict[str, str] = {}
        self._threads: list[threading.Thread] = []
        self._started = 0.0

    def start(self) -> PauseProbe:
        self._started = self._clock()
        for name, opener in self._openers.items():
            thread = threading.Thread(target=self._run, args=(name, opener), name=f"agent-probe-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, name: str, opener: Callable[[], libvirt.virConnect]) -> None:
        reads_channel = name == self._channel_from
        if not reads_channel:  # the other hosts connect only once the guest is known to have an agent
            while not self._channel_read.wait(0.05):
                if self._stop.is_set():
                    return
            if self.channel is None or not self.channel.present:
                return
        try:
            conn = opener()
            if reads_channel:
                self.channel = agent_channel(conn, self._uuid)
        except Exception as exc:  # noqa: BLE001 - whatever the opener raises, this host is not probed
            self.errors[name] = str(getattr(exc, "message", exc))
            return
        finally:
            if reads_channel:
                self._channel_read.set()
        if self.channel is None or not self.channel.present:
            return
        while not self._stop.is_set():
            asked = self._clock()
            if ping(conn, self._uuid, timeout_s=self._timeout):
                self._answers[name].append(self._clock())
            self._stop.wait(max(0.0, self._interval - (self._clock() - asked)))

    def answer_count(self, name: str) -> int:
        return len(self._answers.get(name) or [])

    def answered_since(self, name: str, since: float) -> bool:
        times = self._answers.get(name) or []
        return bool(times) and times[-1] >= since

    def stop(self, *, join_s: float | None = None) -> AgentPause:
        """Stop pinging (a ping in flight ends within its timeout) and say what was seen."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self._timeout + 1 if join_s is None else join_s)
        return AgentPause(answers={name: tuple(times) for name, times in self._answers.items()},
                          started=self._started, stopped=self._clock())
