"""Telling pages that a migration (live or cold) changed; core.broadcast sends, on commit."""

from __future__ import annotations

from core import broadcast

from ..models import ColdMigration, Migration
from ..payloads import state_payload


def migration_changed(migration: Migration) -> None:
    """The migration's page follows its group; the guest's page and the list follow the inventory."""
    broadcast.migration_status(migration.pk, state_payload(migration))
    broadcast.inventory_changed(host_id=migration.source_id)


def migration_ended(migration: Migration) -> None:
    """Both hosts' pages change when a migration ends (the guest may have moved)."""
    broadcast.inventory_changed(host_id=migration.source_id)
    broadcast.inventory_changed(host_id=migration.destination_id)


def cold_changed(cold: ColdMigration) -> None:
    broadcast.inventory_changed(host_id=cold.source_id)
    if not cold.same_host:
        broadcast.inventory_changed(host_id=cold.destination_id)
