"""Periodic jobs, for `python manage.py rqcron hosts.cron`."""

from django.conf import settings
from rq import cron

from .jobs import inventory_refresh_all

cron.register(
    inventory_refresh_all,
    queue_name="default",
    interval=settings.VMPORTAL_INVENTORY_REFRESH_SECONDS,
    job_timeout=120,
)
