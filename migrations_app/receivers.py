"""A migration whose job the worker lost is handed to the reconciler at once (not at the next sweep)."""

from django.dispatch import receiver

from core.signals import job_lost

from .reconciler import migrations_job_lost


@receiver(job_lost, dispatch_uid="migrations_app.job_lost")
def _on_job_lost(sender, *, job_id: int, reason: str, **kwargs) -> None:
    migrations_job_lost(job_id=job_id, reason=reason)
