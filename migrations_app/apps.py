import logging

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger(__name__)


def reconcile_migrations() -> None:
    """Hand free slots to waiting migrations and queue reconciling of those whose worker died.

    Registered as periodic work of the watch_hosts loop and as a worker-start hook.
    """
    from .reconciler import migrations_reconcile  # the app registry is not ready when apps.py loads

    found = migrations_reconcile()
    if found["dispatched"] or found["reconciling"]:
        logger.info("migrations: %s", found)


class MigrationsAppConfig(AppConfig):
    """Live and offline migration of guests between hosts: wizard, preflight, runner, reconciler."""

    name = "migrations_app"
    verbose_name = "Live migrations"

    def ready(self):
        from core import registry

        from . import receivers  # noqa: F401  (a lost job's migration is reconciled at once)

        registry.register_periodic(
            "migrations.reconcile",
            reconcile_migrations,
            every_s=lambda: settings.VMPORTAL_MIGRATION_RECONCILE_SECONDS,
        )
        # A restarted worker is where orphans are likeliest: look before taking jobs.
        registry.register_worker_start(reconcile_migrations)
