"""The rolling queue hears at once when an item's migration or power job, or the run's check of the hosts, ends."""

from django.dispatch import receiver

from core.signals import job_ended
from migrations_app.services.events import migration_settled

from .choices import EvacuationJobKindChoices
from .queue import evacuation_advance, evacuation_for_job, evacuation_for_migration


@receiver(migration_settled, dispatch_uid="maintenance.migration_settled")
def _on_migration_settled(sender, *, migration_id: int, **kwargs) -> None:
    evacuation_id = evacuation_for_migration(migration_id)
    if evacuation_id is not None:
        evacuation_advance(evacuation_id)


@receiver(job_ended, dispatch_uid="maintenance.job_ended")
def _on_job_ended(sender, *, job_id: int, kind: str, **kwargs) -> None:
    if not kind.startswith("vm.") and kind != EvacuationJobKindChoices.FACTS:
        return
    evacuation_id = evacuation_for_job(job_id)
    if evacuation_id is not None:
        evacuation_advance(evacuation_id)
