"""What the migrations app adds to a guest's page (templates/hosts/…vm_detail_body.html).

The hosts app knows nothing of migrations; its guest page loads these tags instead:

    {% load migration_panels %}
    {% vm_migrations vm as moves %}      reads the guest's recent live and cold migrations once
    {% vm_migrate_buttons moves %}       Migrate / Cold migrate, or a link to the one under way
    {% vm_migrate_why moves %}           why Migrate or Cold migrate is not offered
    {% vm_migrations_card moves %}       the guest's migration history
"""

from __future__ import annotations

from dataclasses import dataclass

from django import template

from hosts.models import VirtualMachine
from migrations_app.models import ColdMigration, Migration

register = template.Library()

# Rows of each history table on the guest page.
RECENT_MIGRATIONS = 10


@dataclass(frozen=True)
class GuestMoves:
    vm: VirtualMachine
    migrations: list[Migration]
    cold_migrations: list[ColdMigration]

    @property
    def active_migration(self) -> Migration | None:
        return next((m for m in self.migrations if m.is_active), None)

    @property
    def active_cold(self) -> ColdMigration | None:
        return next((c for c in self.cold_migrations if c.is_active), None)


@register.simple_tag
def vm_migrations(vm: VirtualMachine) -> GuestMoves:
    migrations = list(
        Migration.objects.filter(vm_uuid=vm.uuid).select_related("source", "destination")[:RECENT_MIGRATIONS]
    )
    cold = list(
        ColdMigration.objects.filter(vm_uuid=vm.uuid)
        .select_related("source", "destination", "share__server")
        .defer("files", "verdicts", "original_xml", "new_xml")[:RECENT_MIGRATIONS]
    )
    return GuestMoves(vm=vm, migrations=migrations, cold_migrations=cold)


def _panel(moves: GuestMoves, context) -> dict:
    return {
        "vm": moves.vm,
        "moves": moves,
        "active_migration": moves.active_migration,
        "active_cold": moves.active_cold,
        "can_operate": context.get("can_operate", False),
        # The guest's lease as the page found it (hosts' guest page puts it in its context).
        "lease": context.get("lease"),
    }


@register.inclusion_tag("migrations_app/partials/vm_migrate_buttons.html", takes_context=True)
def vm_migrate_buttons(context, moves: GuestMoves):
    return _panel(moves, context)


@register.inclusion_tag("migrations_app/partials/vm_migrate_why.html", takes_context=True)
def vm_migrate_why(context, moves: GuestMoves):
    return _panel(moves, context)


@register.inclusion_tag("migrations_app/partials/vm_migrations_card.html", takes_context=True)
def vm_migrations_card(context, moves: GuestMoves):
    return _panel(moves, context)
