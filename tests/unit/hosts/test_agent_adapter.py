"""The guest-agent adapter: finding the channel in a definition, the longest gap between answers,
and the probe's threads (a fake ping plays the guest moving from one host to the other)."""

from __future__ import annotations

import threading
import time

import pytest

from hosts.adapters import agent
from migrations_app.heartbeat import NO_CHANNEL, agent_figures
from tests.waiting import wait_until

CHANNEL = ("<domain><devices><channel type='unix'><source mode='bind'/>"
           "<target type='virtio' name='org.qemu.guest_agent.0' state='{state}'/></channel></devices></domain>")


@pytest.mark.parametrize("xml, present, connected", [
    (CHANNEL.format(state="connected"), True, True),
    (CHANNEL.format(state="disconnected"), True, False),
    (CHANNEL.replace(" state='{state}'", ""), True, True),
    ("<domain><devices><channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>"
     "</devices></domain>", False, False),
    ("<domain><devices/></domain>", False, False),
    ("not xml <", False, False),
])
def test_parse_agent_channel(xml, present, connected):
    channel = agent.parse_agent_channel(xml)
    assert (channel.present, channel.connected) == (present, connected)


@pytest.mark.parametrize("times, gap", [([], None), ([1.0], None), ([1.0, 1.05, 1.1], 0.05), ([3.0, 1.0, 1.2], 1.8)])
def test_longest_gap(times, gap):
    assert agent.longest_gap(times) == pytest.approx(gap) if gap is not None else agent.longest_gap(times) is None


def test_the_probe_measures_the_pause_across_both_hosts(monkeypatch):
    """The guest answers on the source, pauses ~0.3 s, then answers on the destination."""
    where = {"host": "source"}
    lock = threading.Lock()

    def fake_ping(conn, uuid, *, timeout_s):
        with lock:
            here = where["host"] == conn
        if not here:
            time.sleep(0.01)
        return here

    monkeypatch.setattr(agent, "ping", fake_ping)
    monkeypatch.setattr(agent, "agent_channel", lambda conn, uuid: agent.AgentChannel(present=True))
    probe = agent.PauseProbe({"source": lambda: "source", "destination": lambda: "destination"}, "u",
                             interval_s=0.01).start()
    wait_until(lambda: probe.answer_count("source") > 5, timeout=5, interval=0.01, what="answers on the source")
    with lock:
        where["host"] = None  # the switch-over: nobody answers
    time.sleep(0.3)  # the pause the probe is to measure
    with lock:
        where["host"] = "destination"
    wait_until(lambda: probe.answer_count("destination") > 5, timeout=5, interval=0.01,
               what="answers on the destination")
    pause = probe.stop()
    assert pause.answered_on("source") and pause.answered_on("destination")
    assert 0.25 <= pause.max_gap_s < 0.6, pause.max_gap_s
    figures = agent_figures(pause, channel=agent.AgentChannel(present=True), moved=True)
    assert figures["measured"] and 250 <= figures["max_gap_ms"] < 600
    assert figures["answers"]["source"] > 5 and figures["answers"]["destination"] > 5


@pytest.mark.parametrize("answers, moved, measured, words", [
    ({"source": (1.0, 1.1), "destination": (1.5,)}, True, True, ""),
    ({"source": (1.0, 1.1), "destination": ()}, True, False, "did not answer on the destination"),
    ({"source": (1.0, 1.1), "destination": ()}, False, True, ""),  # it stayed: the source's answers say it all
    ({"source": (), "destination": (2.0,)}, True, False, "did not answer on the source"),
])
def test_agent_figures(answers, moved, measured, words):
    figures = agent_figures(agent.AgentPause(answers=answers, started=0.0, stopped=3.0),
                            channel=agent.AgentChannel(present=True), moved=moved)
    assert figures["measured"] is measured and words in figures.get("why", "")


def test_agent_figures_without_a_channel_say_so_plainly():
    assert agent_figures(agent.AgentPause(), channel=agent.AgentChannel(present=False), moved=True) == {
        "measured": False, "why": NO_CHANNEL}
    assert "offline" in agent_figures(None, channel=None, moved=True)["why"]
    assert "could not read the guest's definition on the source (source: refused)" in agent_figures(
        agent.AgentPause(), channel=None, moved=True, errors={"source": "refused"})["why"]


def test_without_a_channel_nothing_is_pinged_and_the_destination_is_never_opened(monkeypatch):
    pinged, opened = [], []
    monkeypatch.setattr(agent, "ping", lambda conn, uuid, *, timeout_s: pinged.append(conn) or True)
    monkeypatch.setattr(agent, "agent_channel", lambda conn, uuid: agent.AgentChannel(present=False))
    probe = agent.PauseProbe({"source": lambda: opened.append("source") or "s",
                              "destination": lambda: opened.append("destination") or "d"}, "u").start()
    wait_until(lambda: probe.channel is not None, timeout=5, interval=0.01, what="the channel read")
    pause = probe.stop()  # joins both threads: the destination's saw no channel and never connected
    assert (pinged, opened, pause.count, probe.channel.present) == ([], ["source"], 0, False)


def test_a_host_the_probe_cannot_connect_to_has_no_answers_and_says_why(monkeypatch):
    monkeypatch.setattr(agent, "ping", lambda conn, uuid, *, timeout_s: True)
    monkeypatch.setattr(agent, "agent_channel", lambda conn, uuid: agent.AgentChannel(present=True))

    def refuse():
        raise OSError("connection refused")

    probe = agent.PauseProbe({"source": lambda: "c", "destination": refuse}, "u", interval_s=0.01).start()
    wait_until(lambda: probe.answered_since("source", 0.0) and "destination" in probe.errors, timeout=5,
               interval=0.01, what="an answer on the source and the destination's error")
    pause = probe.stop()
    assert pause.answered_on("source") and not pause.answered_on("destination")
    assert probe.errors == {"destination": "connection refused"}
