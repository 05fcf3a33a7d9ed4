"""How long did the guest itself stop? Its guest agent, asked while it moves, and a pluggable
heartbeat probe asked after a live migration.

``agent_figures`` judges what the runner's guest-agent probe saw (hosts.adapters.agent): the
longest time the guest's agent did not answer on either host, for any guest with an agent channel.

``settings.VMPORTAL_GUEST_HEARTBEAT_PROBE`` names a callable ``(guest_name, since_unix)``
returning ``{"max_gap_s": float, "continuous": bool, "beats": int}`` or None (no heartbeat
known for that guest). Unset (the default), nothing is probed. The lab's guests print a
heartbeat on their serial port; ``lab.heartbeat:probe`` reads it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string

from hosts.adapters.agent import AgentChannel, AgentPause

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuestHeartbeat:
    max_gap_s: float
    continuous: bool
    beats: int


@lru_cache(maxsize=4)
def _load(path: str):
    # "package.module:function" or "package.module.function"
    return import_string(path.replace(":", "."))


def probe_guest(guest_name: str, since_unix: float) -> GuestHeartbeat | None:
    """The configured probe's answer, or None (no probe, no heartbeat, or a broken probe)."""
    path = getattr(settings, "VMPORTAL_GUEST_HEARTBEAT_PROBE", "")
    if not path:
        return None
    try:
        result = _load(path)(guest_name, since_unix)
    except Exception:  # a probe is optional: its failure must not fail the migration record
        logger.exception("guest heartbeat probe %s failed for %s", path, guest_name)
        return None
    if result is None:
        return None
    try:
        gap = float(result["max_gap_s"])
        beats = int(result["beats"])
        continuous = bool(result["continuous"])
    except (KeyError, TypeError, ValueError):
        logger.warning("guest heartbeat probe %s returned %r; ignoring it", path, result)
        return None
    if not math.isfinite(gap) or gap < 0 or beats < 0:
        return None
    return GuestHeartbeat(max_gap_s=gap, continuous=continuous, beats=beats)


NO_CHANNEL = ("The guest has no guest-agent channel (org.qemu.guest_agent.0), so the pause it saw is not "
              "measured: add the channel to its definition and run qemu-guest-agent in it.")


def agent_figures(pause: AgentPause | None, *, channel: AgentChannel | None, moved: bool,
                  errors: dict | None = None) -> dict:
    """What the guest-agent probe measured, for the migration's summary (pure).

    ``pause`` None: no probe ran (an offline migration). ``channel`` None: the probe could not
    read the guest's definition (``errors`` says why). Measured only when the agent answered
    before the switch-over (on the source) and, when the guest moved, after it (on the
    destination): otherwise the longest gap says nothing of the pause.
    """
    if pause is None:
        return {"measured": False, "why": "Not probed: an offline migration has no running guest to ask."}
    if channel is None:
        detail = "; ".join(f"{host}: {error}" for host, error in (errors or {}).items())
        return {"measured": False, "why": "The guest-agent probe could not read the guest's definition on the "
                                          "source" + (f" ({detail})" if detail else "") + "."}
    if not channel.present:
        return {"measured": False, "why": NO_CHANNEL}
    answers = {"source": len(pause.answers.get("source", ())), "destination": len(pause.answers.get("destination", ()))}
    if not answers["source"]:
        return {"measured": False, "answers": answers,
                "why": "The guest agent did not answer on the source: is qemu-guest-agent running in the guest?"}
    if moved and not answers["destination"]:
        return {"measured": False, "answers": answers,
                "why": "The guest agent did not answer on the destination after the switch-over."}
    gap = pause.max_gap_s
    return {"measured": gap is not None, "answers": answers, "max_gap_ms": round(gap * 1000) if gap is not None else None,
            "probed_s": round(pause.stopped - pause.started, 3)}
