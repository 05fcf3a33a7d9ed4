"""Telling pages that a migration (live or cold) changed; core.broadcast sends, on commit."""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal

from core import broadcast
from core.jobs import announce

from ..models import ColdMigration, Migration
from ..payloads import state_payload


def migration_changed(migration: Migration) -> None:
    """The migration's page follows its group; the guest's page and the list follow the inventory."""
    broadcast.migration_status(migration.pk, state_payload(migration))
    broadcast.inventory_changed(host_id=migration.source_id)


# Sent after the commit that ends a live or offline migration, with ``migration_id`` and
# ``status``: the evacuation queue (maintenance) starts its next item on it.
migration_settled = Signal()


def migration_ended(migration: Migration) -> None:
    """Both hosts' pages change when a migration ends (the guest may have moved); listeners hear of it."""
    broadcast.inventory_changed(host_id=migration.source_id)
    broadcast.inventory_changed(host_id=migration.destination_id)
    migration_id, status = migration.pk, migration.status
    transaction.on_commit(lambda: announce(migration_settled, migration_id=migration_id, status=str(status)))


def cold_changed(cold: ColdMigration) -> None:
    broadcast.inventory_changed(host_id=cold.source_id)
    if not cold.same_host:
        broadcast.inventory_changed(host_id=cold.destination_id)
