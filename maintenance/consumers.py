"""The evacuation page's websocket: the evacuation's state first, then its changes, and the progress
samples of its items' migrations (the page moves each row's bar), including migrations that start
after the page connected."""

from channels.db import database_sync_to_async

from core.broadcast import evacuation_group, migration_group
from core.choices import RoleChoices
from core.consumers import RoleGatedConsumer
from hosts.permissions import records_for

from .models import Evacuation, EvacuationItem
from .payloads import evacuation_payload


class EvacuationConsumer(RoleGatedConsumer):
    record_model = Evacuation

    def get_group(self):
        self.evacuation_id = self.scope["url_route"]["kwargs"]["evacuation_id"]
        self.followed: set[int] = set()
        if not Evacuation.objects.filter(pk=self.evacuation_id).exists():
            return None
        return evacuation_group(self.evacuation_id)

    def record_id(self):
        return self.evacuation_id

    @classmethod
    def visible_records(cls, user, rows):
        # Its host and every host its items move between: their migrations' samples come along.
        return records_for(user, RoleChoices.VIEWER, rows)

    async def groups_joined(self):
        await self._follow(await database_sync_to_async(self._item_migrations)())

    def _item_migrations(self) -> list[int]:
        ids = EvacuationItem.objects.filter(evacuation_id=self.evacuation_id, migration__isnull=False)
        return list(ids.values_list("migration_id", flat=True))

    async def _follow(self, migration_ids) -> None:
        for migration_id in migration_ids:
            if migration_id and migration_id not in self.followed:
                self.followed.add(migration_id)
                await self.join_groups(migration_group(migration_id))

    async def disconnect(self, code):
        await super().disconnect(code)
        await self.leave_groups(*(migration_group(migration_id) for migration_id in getattr(self, "followed", ())))

    def current_state(self):
        ev = Evacuation.objects.select_related("host").get(pk=self.evacuation_id)
        return {"type": "evacuation.state", "evacuation": evacuation_payload(ev)}

    async def evacuation_status(self, event):
        state = event["evacuation"]
        # An item that started since gets a migration: follow its progress from now on.
        await self._follow(item.get("migration") for item in state.get("items", ()))
        await self.send_json({"type": "evacuation.status", "evacuation": state})

    async def migration_progress(self, event):
        await self.send_json({"type": "migration.progress", "migration": event.get("migration_id"), "sample": event["sample"]})

    async def migration_status(self, event):
        await self.send_json({"type": "migration.status", "migration": event["migration"]})
