"""The RQ worker class (settings.RQ["WORKER_CLASS"]): reconciles orphaned migrations on start."""

import logging

from django.db import connections
from rq import Worker

logger = logging.getLogger(__name__)


class MigrationAwareWorker(Worker):
    """A worker that, before taking jobs, looks for migrations a dead worker left active.

    Only finds and queues (database and Redis); the reconcile jobs themselves run in work
    horses like any job, so no libvirt connection is opened in the parent process.
    """

    def work(self, *args, **kwargs):
        try:
            from .reconciler import migrations_reconcile

            found = migrations_reconcile()
            if found["reconciling"] or found["dispatched"]:
                logger.info("worker start: %s", found)
        except Exception:  # a worker must start even if this check cannot run
            logger.exception("reconciling migrations at worker start failed")
        finally:
            # Work horses are forked from this process: they must not share its connections.
            connections.close_all()
        return super().work(*args, **kwargs)
