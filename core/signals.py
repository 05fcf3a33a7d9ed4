"""Signals the apps above core listen to (the lower app announces; it never imports its listeners).

``job_ended`` is sent after the commit that ends a job (succeeded, failed or aborted), with
``job_id``, ``kind`` and ``status``. A receiver that raises is logged by the sender and never
fails the job.

``job_lost`` is sent after ``job_ended`` when RQ reported that a job's work stopped outside
``run_job`` — its work horse died (kill -9, out of memory), it failed before ``run_job`` could
record it, or its worker vanished — with ``job_id``, ``kind``, ``target_type``, ``target_id``
and ``reason``. The record the job worked on is then in whatever state the dead process left
it: each app that owns such records listens and hands them to its reconciler at once.
"""

from django.dispatch import Signal

job_ended = Signal()
job_lost = Signal()
