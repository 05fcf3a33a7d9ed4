"""How long did the guest itself stop? Asked of a pluggable probe after a live migration.

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
