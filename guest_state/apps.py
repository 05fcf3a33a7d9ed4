from django.apps import AppConfig
from django.conf import settings


def reconcile_states() -> None:
    """Settle saves and restores whose worker died (registered as periodic work of watch_hosts)."""
    from .reconciler import states_reconcile  # the app registry is not ready when apps.py loads

    states_reconcile()


def check_snapshots() -> None:
    """Compare snapshot records with libvirt's lists when they were last compared long ago."""
    from .snapshot_services import snapshots_check_due

    snapshots_check_due(older_than_s=settings.VMPORTAL_GUEST_SNAPSHOT_RECONCILE_SECONDS)


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
        registry.register_periodic(
            "guest_state.snapshots", check_snapshots,
            every_s=lambda: settings.VMPORTAL_GUEST_SNAPSHOT_RECONCILE_SECONDS,
        )
