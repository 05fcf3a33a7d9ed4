"""The migration page's websocket: status changes and progress samples, state first on connect."""

from core.broadcast import migration_group
from core.consumers import RoleGatedConsumer
from core.choices import RoleChoices
from hosts.permissions import records_for

from .models import Migration
from .payloads import chart_samples, state_payload


class MigrationConsumer(RoleGatedConsumer):
    record_model = Migration

    def get_group(self):
        self.migration_id = self.scope["url_route"]["kwargs"]["migration_id"]
        if not Migration.objects.filter(pk=self.migration_id).exists():
            return None
        return migration_group(self.migration_id)

    def record_id(self):
        return self.migration_id

    @classmethod
    def visible_records(cls, user, rows):
        return records_for(user, RoleChoices.VIEWER, rows)

    def current_state(self):
        migration = Migration.objects.get(pk=self.migration_id)
        samples = chart_samples(migration.samples.values_list("elapsed_ms", "stats"))
        return {"type": "migration.state", "migration": state_payload(migration), "samples": samples}

    async def migration_status(self, event):
        await self.send_json({"type": "migration.status", "migration": event["migration"]})

    async def migration_progress(self, event):
        await self.send_json({"type": "migration.progress", "sample": event["sample"]})
