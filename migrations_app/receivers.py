"""A migration whose job the worker lost is handed to the reconciler at once (not at the next sweep);
a follow-up job that ended without recording its figures says so on the migration at once."""

from django.dispatch import receiver

from core.signals import job_ended, job_lost

from .choices import MigrationJobKindChoices
from .reconciler import follow_up_job_ended, migrations_job_lost


@receiver(job_lost, dispatch_uid="migrations_app.job_lost")
def _on_job_lost(sender, *, job_id: int, reason: str, **kwargs) -> None:
    migrations_job_lost(job_id=job_id, reason=reason)


@receiver(job_ended, dispatch_uid="migrations_app.follow_up_ended")
def _on_job_ended(sender, *, job_id: int, kind: str, **kwargs) -> None:
    if kind == MigrationJobKindChoices.FOLLOW_UP:
        follow_up_job_ended(job_id=job_id)
