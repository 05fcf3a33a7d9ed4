from django.apps import AppConfig


class FleetConfig(AppConfig):
    """Balancing and consolidation: recommendations over the load history, applied through the rolling queue."""

    name = "fleet"
    verbose_name = "Fleet balance and consolidation"
