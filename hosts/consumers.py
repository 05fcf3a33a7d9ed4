from core.broadcast import INVENTORY_GROUP
from core.consumers import RoleGatedConsumer

from .models import Host


class InventoryConsumer(RoleGatedConsumer):
    """Tells inventory, host and guest pages which host changed; each re-fetches the rows it
    shows only when they concern that host (static/vmportal/live.js)."""

    group = INVENTORY_GROUP

    def current_state(self):
        return {"type": "inventory.state", "hosts": Host.objects.count()}

    def inventory_changed(self, event):
        self.send_json({"type": "inventory.changed", "host_id": event.get("host_id"),
                        "hosts_changed": bool(event.get("hosts_changed"))})
