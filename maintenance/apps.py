import logging

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger(__name__)


def advance_evacuations() -> None:
    """Settle and continue every active evacuation (the rolling queue's safety net).

    Items normally advance the moment their migration or power job ends (signals); this
    catches what a dead worker or a lost event left behind.
    """
    from .queue import evacuations_advance_all

    moved = evacuations_advance_all()
    if moved:
        logger.info("maintenance: advanced %s evacuation(s)", moved)


class MaintenanceConfig(AppConfig):
    """Host maintenance mode: evacuation plans, the rolling evacuation queue and the way home."""

    name = "maintenance"
    verbose_name = "Host maintenance"

    def ready(self):
        from core import registry

        from . import receivers  # noqa: F401  (connects the signal receivers)

        registry.register_periodic(
            "maintenance.advance", advance_evacuations,
            every_s=lambda: settings.VMPORTAL_EVACUATION_SWEEP_SECONDS,
        )
        registry.register_worker_start(advance_evacuations)
