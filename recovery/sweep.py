"""Periodic work of host recovery (registered in apps.py, run by the watch_hosts loop).

- An item whose job ended without recording an outcome (its worker died) is failed with a
  message saying to look where the guest runs; its lease goes with it.
- A recovered guest's old host that answers again and still lists the guest: the copy is noted
  (audited once per state seen) so its page offers to remove it — never silently.
"""

from __future__ import annotations

from core.choices import JobStatusChoices
from hosts.choices import HostStatusChoices
from hosts.models import VirtualMachine

from . import services
from .choices import ITEM_ACTIVE, RecoveryItemStatusChoices as IS
from .models import RecoveryItem

JOB_ENDED = (JobStatusChoices.SUCCEEDED, JobStatusChoices.FAILED, JobStatusChoices.ABORTED)


def recovery_sweep() -> dict:
    lost = 0
    for item in RecoveryItem.objects.filter(status__in=ITEM_ACTIVE, job__status__in=JOB_ENDED).select_related("job"):
        lost += services.item_finish(
            item=item, ok=False,
            error="Its job ended without recording an outcome: look on the destination whether the guest runs.")
    noted = 0
    items = RecoveryItem.objects.filter(status=IS.SUCCEEDED, stale_removed_at=None,
                                        recovery__host__status=HostStatusChoices.REACHABLE).select_related("recovery__host")
    for item in items:
        # The old host's row, refreshed since the recovery ended: the host says it still has the guest.
        row = VirtualMachine.objects.filter(host=item.recovery.host, uuid=item.vm_uuid, updated__gt=item.ended).first()
        if row is not None and (row.state != item.stale_state or not item.stale_seen_at):
            services.stale_copy_seen(item=item, state=row.state)
            noted += 1
    return {"lost": lost, "stale_noted": noted}
