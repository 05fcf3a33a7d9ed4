"""Choice classes of evacuations (host maintenance mode). Code compares against these, never bare strings."""

from django.db import models


class EvacuationKindChoices(models.TextChoices):
    ENTER = "enter", "Evacuation"  # empty the host for maintenance
    RETURN = "return", "Return"  # bring the guests an evacuation moved back to their origin
    BALANCE = "balance", "Balance"  # a fleet balance recommendation applied: guests of several hosts
    CONSOLIDATE = "consolidate", "Consolidation"  # a host emptied so it can be powered off (not in maintenance)


class EvacuationStatusChoices(models.TextChoices):
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"  # running items finish; no new ones start
    CANCELLING = "cancelling", "Cancelling"  # running items are being aborted
    SUCCEEDED = "succeeded", "Succeeded"  # every guest ended where the plan said
    INCOMPLETE = "incomplete", "Incomplete"  # some guests did not move; the outcome says which and why
    FAILED = "failed", "Failed"  # no guest moved
    CANCELLED = "cancelled", "Cancelled"


EVACUATION_ACTIVE_STATES = (
    EvacuationStatusChoices.RUNNING,
    EvacuationStatusChoices.PAUSED,
    EvacuationStatusChoices.CANCELLING,
)
EVACUATION_TERMINAL_STATES = (
    EvacuationStatusChoices.SUCCEEDED,
    EvacuationStatusChoices.INCOMPLETE,
    EvacuationStatusChoices.FAILED,
    EvacuationStatusChoices.CANCELLED,
)


class ItemActionChoices(models.TextChoices):
    LIVE = "live", "Live migration"
    OFFLINE = "offline", "Move definition"  # a shut-off guest whose disks are shared
    SHUTDOWN = "shutdown", "Shut down, start after"  # cannot move: shut down now, started at exit
    START = "start", "Start again"  # on the way home: a guest shut down for maintenance
    STAY = "stay", "Stays"  # blocked, excluded, or a shut-off guest that cannot move: nothing runs


class ItemStatusChoices(models.TextChoices):
    PENDING = "pending", "Waiting"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"  # left where it was, with its reason
    SKIPPED = "skipped", "Not moved"  # blocked, excluded, stays, or moved/deleted since (return)
    CANCELLED = "cancelled", "Cancelled"


ITEM_OPEN_STATES = (ItemStatusChoices.PENDING, ItemStatusChoices.RUNNING)


class StrategyChoices(models.TextChoices):
    SPREAD = "spread", "Spread (most free memory after placement)"
    PACK = "pack", "Pack (fill the fullest host that fits)"


class EvacuationJobKindChoices(models.TextChoices):
    FACTS = "evacuation.facts", "Check the hosts once for the run"


class EvacuationAuditActionChoices(models.TextChoices):
    ENTER = "evacuation.enter", "Enter maintenance"
    EXIT = "evacuation.exit", "Exit maintenance"
    PAUSE = "evacuation.pause", "Pause"
    RESUME = "evacuation.resume", "Resume"
    CANCEL = "evacuation.cancel", "Cancel"
    ITEM = "evacuation.item", "Item outcome"
    OUTCOME = "evacuation.outcome", "Outcome"
    RUN = "evacuation.run", "Balance or consolidation"
