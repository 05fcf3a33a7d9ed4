from core.broadcast import INVENTORY_GROUP
from core.choices import RoleChoices
from core.consumers import RoleGatedConsumer

from .permissions import hosts_for


class InventoryConsumer(RoleGatedConsumer):
    """Tells inventory, host and guest pages which host changed; each re-fetches the rows it
    shows only when they concern that host (static/vmportal/live.js).

    Every socket hears the one "inventory" group; an event about a host the user may not see
    is not passed on (the hosts they may see are read on connect and at each access check)."""

    group = INVENTORY_GROUP

    def object_allowed(self, user) -> bool:
        self.access_kept(user)
        return True

    def access_kept(self, user) -> None:
        self.visible = set(hosts_for(user, RoleChoices.VIEWER).values_list("pk", flat=True))

    def current_state(self):
        return {"type": "inventory.state", "hosts": len(self.visible)}

    def inventory_changed(self, event):
        host_id = event.get("host_id")
        if host_id is not None and host_id not in self.visible and event.get("hosts_changed"):
            self.access_kept(self.scope["user"])  # a host just added: the user may see it
        if host_id is not None and host_id not in self.visible:
            return  # a host outside the user's host groups: not theirs to hear about
        self.send_json({"type": "inventory.changed", "host_id": host_id,
                        "hosts_changed": bool(event.get("hosts_changed"))})
