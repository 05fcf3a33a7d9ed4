"""A share set-up whose job the worker lost is settled at once (core.signals.job_lost)."""

from django.dispatch import receiver

from core.signals import job_lost

from .reconciler import setups_job_lost


@receiver(job_lost, dispatch_uid="storage.job_lost")
def _on_job_lost(sender, *, job_id: int, kind: str, reason: str, **kwargs) -> None:
    if kind.startswith("share."):
        setups_job_lost(job_id=job_id, reason=reason)
