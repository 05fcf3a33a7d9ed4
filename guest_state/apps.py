from django.apps import AppConfig
from django.conf import settings


def reconcile_states() -> None:
    """Settle saves and restores whose worker died (registered as periodic work of watch_hosts)."""
    from .reconciler import states_reconcile  # the app registry is not ready when apps.py loads

    states_reconcile()


class GuestStateConfig(AppConfig):
    """Save a guest's state to a file, restore it (same host or one that sees the file and disks)."""

    name = "guest_state"
    verbose_name = "Saved guest states"

    def ready(self):
        from core import registry

        from . import receivers  # noqa: F401  (a lost snapshot, save or restore job is settled at once)

        registry.register_periodic(
            "guest_state.reconcile", reconcile_states,
            every_s=lambda: settings.VMPORTAL_GUEST_STATE_RECONCILE_SECONDS,
        )
