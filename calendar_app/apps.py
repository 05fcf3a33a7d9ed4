import logging

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger(__name__)


def tick() -> None:
    """Run the maintenance windows: the steps due now, each once (see ticker.py)."""
    from .ticker import calendar_tick

    done = calendar_tick()
    if done:
        logger.info("calendar: %s", "; ".join(f"occurrence {k}: {', '.join(v)}" for k, v in done.items()))


class CalendarConfig(AppConfig):
    """The maintenance calendar: windows that put hosts into maintenance and bring guests home by themselves."""

    name = "calendar_app"
    verbose_name = "Maintenance calendar"

    def ready(self):
        from core import registry

        registry.register_periodic("calendar.tick", tick, every_s=lambda: settings.VMPORTAL_CALENDAR_TICK_SECONDS)
