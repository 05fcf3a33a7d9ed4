"""Where is the guest, and making the record and the inventory say so.

Shared by the live runner, the reconciler and the cold runner: ask both hosts about the
guest (``presence_on``, ``locate_guest``, which reconcile.settle turns into an outcome),
read libvirt's statistics of the finished job, record a live migration's end
(``record_end``), and refresh both hosts' inventory after it (``refresh_hosts``).
"""

from __future__ import annotations

import logging
import time

from django.db import transaction

from core.actors import Actor
from core.choices import JobLogLevelChoices, JobStatusChoices
from core.jobs import JobContext
from hosts import access
from hosts import services as host_services
from hosts.adapters import migration as migration_adapter
from hosts.adapters.errors import AdapterError
from hosts.jobs import refresh_host_job
from hosts.models import Host

from .choices import MigrationStatusChoices as S
from .models import Migration
from .reconcile import DomainPresence, Outcome, ask_again, settle
from .services import records

logger = logging.getLogger(__name__)

# After libvirt returns, how long to wait for a job it still reports (post-copy finishing).
JOB_END_WAIT_S = 60.0
# How long a host that does not answer is asked again before the outcome is settled without it
# (within the 10 s a dead job is settled in), and how often the hosts are asked meanwhile.
UNREACHABLE_WAIT_S = 8.0
ASK_AGAIN_INTERVAL_S = 0.5


def presence_on(host: Host, guest_uuid: str, *, session=None) -> DomainPresence:
    """The guest as ``host`` shows it now; an unanswered host is ``reachable=False``.

    ``session`` is an open session to ``host`` to ask on (else one is opened for the question).
    """
    try:
        if session is not None:
            found = migration_adapter.domain_presence(session.libvirt, guest_uuid)
        else:
            with access.open_session(host) as opened:
                found = migration_adapter.domain_presence(opened.libvirt, guest_uuid)
    except AdapterError as exc:
        logger.warning("asking %s about %s: %s", host.name, guest_uuid, exc.message)
        return DomainPresence(exists=False, state=None, reason=None, reachable=False)
    return DomainPresence(
        exists=found.exists, state=found.state, reason=found.reason, reachable=True, job_active=found.job_active
    )


def locate_guest(
    migration: Migration, *, job_status: str = "", wait_for_job_s: float = JOB_END_WAIT_S,
    unreachable_wait_s: float | None = None, sessions=None,
) -> tuple[Outcome, DomainPresence, DomainPresence]:
    """Ask both hosts (again while a libvirt job still runs or a host does not answer,
    reconcile.ask_again) and settle.

    ``sessions``: the caller's open (source, destination) sessions, asked instead of new ones;
    a host that did not answer is asked again on a new session (the old one may be the
    connection its restarted libvirtd dropped).
    """
    guest_uuid = str(migration.vm_uuid)
    src_session, dst_session = sessions or (None, None)
    unreachable_wait_s = UNREACHABLE_WAIT_S if unreachable_wait_s is None else unreachable_wait_s
    started = time.monotonic()
    while True:
        source = presence_on(migration.source, guest_uuid, session=src_session)
        destination = presence_on(migration.destination, guest_uuid, session=dst_session)
        if not ask_again(source, destination, elapsed_s=time.monotonic() - started, job_wait_s=wait_for_job_s,
                         unreachable_wait_s=unreachable_wait_s):
            break
        if not source.reachable:
            src_session = None
        if not destination.reachable:
            dst_session = None
        records.migration_heartbeat(migration=migration)  # still working, not dead
        time.sleep(ASK_AGAIN_INTERVAL_S)
    outcome = settle(
        source, destination, job_status,
        guest=migration.vm_name, source_host=migration.source.name, destination_host=migration.destination.name,
        offline=not migration.is_live,
    )
    return outcome, source, destination


def completed_stats(migration: Migration, *, on_destination: bool, sessions=None) -> dict:
    """libvirt's statistics of the finished job (destination after success, source otherwise).

    ``sessions``: the caller's open (source, destination) sessions, asked instead of new ones.
    """
    src_session, dst_session = sessions or (None, None)
    hosts = [(migration.destination, dst_session), (migration.source, src_session)] if on_destination \
        else [(migration.source, src_session)]
    for host, session in hosts:
        try:
            if session is not None:
                stats = migration_adapter.completed_job_stats(session.libvirt, str(migration.vm_uuid))
            else:
                with access.open_session(host) as opened:
                    stats = migration_adapter.completed_job_stats(opened.libvirt, str(migration.vm_uuid))
        except AdapterError as exc:
            logger.info("no completed job stats from %s: %s", host.name, exc.message)
            continue
        if stats:
            return stats
    return {}


def refresh_hosts(migration, ctx: JobContext | None) -> list[str]:
    """Refresh both hosts' inventory now, in this job (each refresh is its own Job row).

    ``migration`` is anything with ``source`` and ``destination`` hosts (live or cold).
    Returns what failed, in words (empty when both were refreshed).
    """
    hosts = [migration.source] + ([] if migration.destination.pk == migration.source.pk else [migration.destination])
    failed = []
    for host in hosts:
        job = host_services.host_refresh_request(host=host, actor=Actor.system(), enqueue=False)
        if job is None:
            continue
        refresh_host_job(job.pk, host.pk)
        job.refresh_from_db()
        if job.status != JobStatusChoices.SUCCEEDED:
            failed.append(f"The inventory of {host.name} could not be refreshed (job #{job.pk}: "
                          f"{job.error or job.status}).")
        if ctx is not None:
            level = JobLogLevelChoices.INFO if job.status == JobStatusChoices.SUCCEEDED else JobLogLevelChoices.WARNING
            ctx.log(f"Inventory of {host.name} refreshed: {job.status}{': ' + job.error if job.error else ''}",
                 level=level)
    return failed


def follow_guest(migration: Migration, status: str, ctx: JobContext | None) -> list[str]:
    """After the outcome is recorded (and the guest's row moved with it): refresh both hosts."""
    return refresh_hosts(migration, ctx)


def record_end(migration: Migration, ctx: JobContext | None, status: S, **kwargs) -> None:
    """Record the end through records.migration_finish; a record another process settled first is kept.

    On success the guest's inventory row moves to the destination in the same transaction, so
    a page that sees "succeeded" also sees the guest on its new host.
    """
    hint = kwargs.pop("hint", "")
    with transaction.atomic():
        finished = records.migration_finish(migration=migration, status=status, error_hint=hint, **kwargs)
        if finished and status == S.SUCCEEDED:
            host_services.vm_relocate(
                vm_uuid=migration.vm_uuid, source=migration.source, destination=migration.destination
            )
    if not finished:
        migration.refresh_from_db()
        if ctx is not None:
            ctx.log(f"Migration #{migration.pk} was already settled as {migration.status}; kept that",
                    level=JobLogLevelChoices.WARNING)
