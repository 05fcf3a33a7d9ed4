from django.apps import AppConfig
from django.conf import settings


def reconcile_setups() -> None:
    """Settle share set-ups whose worker died (registered as periodic work of watch_hosts)."""
    from .reconciler import setups_reconcile  # the app registry is not ready when apps.py loads

    setups_reconcile()


class StorageConfig(AppConfig):
    name = "storage"
    verbose_name = "Shared storage (NFS shares and libvirt pools)"

    def ready(self):
        from core import registry

        from . import receivers  # noqa: F401  (a lost set-up job is settled at once)

        registry.register_periodic(
            "storage.reconcile", reconcile_setups,
            every_s=lambda: settings.VMPORTAL_STORAGE_RECONCILE_SECONDS,
        )
