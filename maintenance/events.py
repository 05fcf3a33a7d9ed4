"""Telling pages that an evacuation changed (through core.broadcast, on commit)."""

from __future__ import annotations

from core import broadcast

from .models import Evacuation
from .payloads import evacuation_payload


def evacuation_changed(evacuation: Evacuation) -> None:
    """The evacuation's page follows its group; the host page and inventory follow the inventory."""
    broadcast.evacuation_status(evacuation.pk, evacuation_payload(evacuation))
    broadcast.inventory_changed(host_id=evacuation.host_id)
