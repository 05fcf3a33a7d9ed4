from channels.db import database_sync_to_async

from core.broadcast import INVENTORY_GROUP
from core.choices import RoleChoices
from core.consumers import RoleGatedConsumer
from core.live_events import unseen_hosts, visible_part

from .permissions import hosts_for, visible_host_ids


class InventoryConsumer(RoleGatedConsumer):
    """Tells inventory, host and guest pages what changed: which hosts, a host's new status
    (host.status), a guest's new state (vm.state), coalesced by core.broadcast. Each page patches
    the rows it shows and re-fetches them only when the event concerns them
    (static/vmportal/live.js).

    Every socket hears the one "inventory" group; what concerns hosts the user may not see is
    not passed on (the hosts they may see are read on connect and at each access check). An
    event passes through here in the event loop, without a database read, unless it brings a
    host the socket does not know yet."""

    group = INVENTORY_GROUP

    def access_kept(self, user) -> None:
        self.visible = frozenset(hosts_for(user, RoleChoices.VIEWER).values_list("pk", flat=True))

    @classmethod
    def refused_among(cls, sockets, users):
        # The periodic re-check: every socket's hosts in at most two queries (one set per answer).
        visible = visible_host_ids([users[pk] for pk in {s.scope["user"].pk for s in sockets}], RoleChoices.VIEWER)
        for socket in sockets:
            socket.visible = visible[socket.scope["user"].pk]
        return set()

    def current_state(self):
        return {"type": "inventory.state", "hosts": len(self.visible)}

    async def inventory_changed(self, event):
        if unseen_hosts(event, self.visible):
            # A host just added: the user may see it.
            await database_sync_to_async(self.access_kept)(self.scope["user"])
        part = visible_part(event, self.visible)
        if part is not None:  # else: only hosts outside the user's host groups, not theirs to hear about
            await self.send_json(part)
