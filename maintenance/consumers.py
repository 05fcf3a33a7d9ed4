"""The evacuation page's websocket: the evacuation's state first, then its changes, and the progress
samples of its items' migrations (the page moves each row's bar), including migrations that start
after the page connected."""

from asgiref.sync import async_to_sync

from core.broadcast import evacuation_group, migration_group
from core.choices import RoleChoices
from core.consumers import RoleGatedConsumer
from hosts.permissions import records_for

from .models import Evacuation, EvacuationItem
from .payloads import evacuation_payload


class EvacuationConsumer(RoleGatedConsumer):
    def get_group(self):
        self.evacuation_id = self.scope["url_route"]["kwargs"]["evacuation_id"]
        self.followed: set[int] = set()
        if not Evacuation.objects.filter(pk=self.evacuation_id).exists():
            return None
        return evacuation_group(self.evacuation_id)

    def object_allowed(self, user) -> bool:
        # Its host and every host its items move between: their migrations' samples come along.
        return records_for(user, RoleChoices.VIEWER, Evacuation.objects.filter(pk=self.evacuation_id)).exists()

    def connect(self):
        super().connect()
        if getattr(self, "joined_group", None):
            ids = EvacuationItem.objects.filter(evacuation_id=self.evacuation_id, migration__isnull=False)
            self._follow(ids.values_list("migration_id", flat=True))

    def _follow(self, migration_ids) -> None:
        for migration_id in migration_ids:
            if migration_id and migration_id not in self.followed:
                self.followed.add(migration_id)
                async_to_sync(self.channel_layer.group_add)(migration_group(migration_id), self.channel_name)

    def disconnect(self, code):
        super().disconnect(code)
        for migration_id in getattr(self, "followed", ()):
            async_to_sync(self.channel_layer.group_discard)(migration_group(migration_id), self.channel_name)

    def current_state(self):
        ev = Evacuation.objects.select_related("host").get(pk=self.evacuation_id)
        return {"type": "evacuation.state", "evacuation": evacuation_payload(ev)}

    def evacuation_status(self, event):
        state = event["evacuation"]
        # An item that started since gets a migration: follow its progress from now on.
        self._follow(item.get("migration") for item in state.get("items", ()))
        self.send_json({"type": "evacuation.status", "evacuation": state})

    def migration_progress(self, event):
        self.send_json({"type": "migration.progress", "migration": event.get("migration_id"), "sample": event["sample"]})

    def migration_status(self, event):
        self.send_json({"type": "migration.status", "migration": event["migration"]})
