"""Signals the apps above core listen to (the lower app announces; it never imports its listeners).

``job_ended`` is sent after the commit that ends a job (succeeded, failed or aborted), with
``job_id``, ``kind`` and ``status``. A receiver that raises is logged by the sender and never
fails the job.
"""

from django.dispatch import Signal

job_ended = Signal()
