"""Running one migration: check, migrate while sampling, then find out where the guest really is.

Both hosts' sessions are opened at once and serve the whole run. The check right before
migrating re-reads only what can change when the facts of a full gather are fresh
(recheck.py), else gathers both hosts in full. The job's thread does all database work.
libvirt's migrate call blocks until the migration ends, so it runs in a thread of its own;
meanwhile the job's thread reads the job statistics about four times a second over a
separate connection to the source, stores and broadcasts them, and acts on abort,
force-complete and the completion timeout. Whatever libvirt returns or raises, both hosts
are then asked where the guest is, and reconcile.settle decides what is recorded — at
once, so the page, the guest's lease and the evacuation queue hear of it, and the job ends.
What follows is a job of its own (``run_follow_up``, created with the end): both hosts'
inventories refreshed, the guest's own pause measured, filled in on the record and the page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from core.actors import Actor
from core.audit import audit_record_now
from core.choices import AuditResultChoices, JobLogLevelChoices
from core.errors import PortalError
from core.jobs import JobContext
from hosts import access
from hosts.adapters import agent as agent_adapter
from hosts.adapters import migration as migration_adapter
from hosts.adapters.errors import AdapterError, DomainNotFound, MigrationAborted
from hosts.adapters.libvirt import is_ssh_uri

from . import neighbours, policy, recheck, states
from .choices import FollowUpStatusChoices as F, MigrationAuditActionChoices as A, MigrationStatusChoices as S
from .gather import gather_pair
from .heartbeat import GuestHeartbeat, agent_figures, probe_guest
from .models import Migration
from .options import MigrationOptions, TimeoutAction, from_dict, libvirt_flags, libvirt_params
from .payloads import ADAPTIVE_STEP_KEY, sample_payload
from .preflight import disks_to_copy, overall, run_preflight
from .progress import compact_stats
from .reconcile import NEEDS_ATTENTION, Outcome
from .services import facts as facts_service, records
from .verdicts import VerdictStatus
from .whereabouts import completed_stats, follow_guest, locate_guest, record_end

logger = logging.getLogger(__name__)

# The highest downtime force-complete steps up to when post-copy is not allowed.
FORCE_COMPLETE_MAX_DOWNTIME_MS = 5000
FORCE_COMPLETE_STEP_S = 2.0
# Let the guest's heartbeat resume on the destination before reading it.
HEARTBEAT_SETTLE_S = 1.5
# How long the migrate thread gets to return after the job was aborted on our side.
MIGRATE_THREAD_JOIN_S = 60.0

ProgressCallback = Callable[[dict], None]


class MigrationNotCompleted(PortalError):
    """The migration ended without the guest on the destination; recorded already. Fails the Job."""


def _log(ctx: JobContext, message: str, *, level=JobLogLevelChoices.INFO) -> None:
    ctx.log(message, level=level)


def p2p_error_hint(exc: AdapterError, options: MigrationOptions, dest_uri: str) -> str:
    """What to do about a libvirt error, with the peer-to-peer SSH case spelled out."""
    text = exc.message.lower()
    if options.peer_to_peer and is_ssh_uri(dest_uri) and (
        "host key verification failed" in text or "permission denied" in text or "no route" in text
        or "could not resolve" in text or "connection refused" in text
    ):
        return (
            "Peer-to-peer: the source host's own libvirtd connects to "
            f"{dest_uri.split('?', 1)[0]} over SSH with its root key and known_hosts, not the portal's. "
            "Install the source's root key in the destination's authorized_keys and the destination's host "
            "key in the source's /root/.ssh/known_hosts (ssh to it once as root), or choose managed mode."
        )
    return exc.hint


# ---------------------------------------------------------------------------
# Sampling and steering while libvirt migrates


@dataclass
class _MigrateCall:
    error: AdapterError | None = None
    crash: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    guest_agent: dict | None = None  # what the guest-agent probe saw (heartbeat.agent_figures)
    neighbours: dict | None = None  # the destination's other guests meanwhile (neighbours.Watch.figures)


# After libvirt returns, how long the agent probe waits for the guest to answer on the destination.
AGENT_SETTLE_S = 3.0


class Sampler:
    """Polls the running job on its own connection; stores samples; acts on requests and timeouts."""

    def __init__(
        self, migration: Migration, options: MigrationOptions, conn, ctx: JobContext,
        on_progress: ProgressCallback | None, started: float,
    ):
        self.migration = migration
        self.options = options
        self.conn = conn
        self.ctx = ctx
        self.on_progress = on_progress
        self.started = started
        self.uuid = str(migration.vm_uuid)
        self.infos: list[policy.JobInfo] = []
        self.samples = 0
        self.warning = ""
        self.abort_sent = False
        self.timed_out = False
        self.forced = 0
        self.forcing_downtime: int | None = None
        self.next_force_step = 0.0
        self.postcopy_started = False
        self.timeout_handled = False
        self.downtime_set = False
        self.read_error_logged = False
        self.adaptive_downtime: int | None = options.max_downtime_ms
        self.adaptive_steps: list[str] = []  # what the adaptive policy did, in order
        self.last_stats: dict = {}  # the job stats of the last sample recorded
        self.limit_s = policy.migration_time_limit_s(
            options, max_seconds=settings.VMPORTAL_MIGRATION_MAX_SECONDS
        )

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def tick(self) -> None:
        elapsed = self.elapsed()
        stats = self._read()
        if stats:
            info = policy.JobInfo.from_stats(stats)
            if info.is_active:
                self._record(stats, info, elapsed)
        else:
            records.migration_heartbeat(migration=self.migration)
        abort_requested, force_requests = records.migration_controls(migration=self.migration)
        if abort_requested and not self.abort_sent:
            self.abort("Abort requested by an operator")
        if force_requests > self.forced:
            self.forced = force_requests
            self.force_complete("Force complete requested by an operator")
        if not self.timeout_handled and policy.should_trigger_timeout_action(elapsed, self.options):
            self.timeout_handled = True
            self._timeout(elapsed)
        if stats and not self.abort_sent and self.forcing_downtime is None:
            step = policy.adaptive_step(self.infos, self.options, downtime_ms=self.adaptive_downtime,
                                        postcopy_started=self.postcopy_started)
            if step is not None:
                self._adapt(step, elapsed)
        if self.forcing_downtime is not None and time.monotonic() >= self.next_force_step:
            self._raise_downtime()
        if elapsed > self.limit_s and not self.abort_sent:
            self.timed_out = True
            self.abort(
                f"The migration ran longer than {self.limit_s} s (completion timeout or "
                "VMPORTAL_MIGRATION_MAX_SECONDS); aborting it"
            )

    def _read(self) -> dict:
        try:
            return migration_adapter.job_stats(self.conn, self.uuid)
        except DomainNotFound:
            return {}  # it just left the source (undefine-source): no job here any more
        except AdapterError as exc:
            if not self.read_error_logged:
                self.read_error_logged = True
                _log(self.ctx, f"Could not read the job statistics: {exc.message}", level=JobLogLevelChoices.WARNING)
            return {}

    def _record(self, stats: dict, info: policy.JobInfo, elapsed: float) -> None:
        if not self.downtime_set and self.options.max_downtime_ms:
            self.downtime_set = True
            self._act(f"Maximum downtime set to {self.options.max_downtime_ms} ms",
                      migration_adapter.set_max_downtime, self.options.max_downtime_ms)
        self.infos.append(info)
        warning = policy.convergence_warning(self.infos, self.options) or ""
        self.last_stats = stats
        self._store(elapsed, compact_stats(stats),
                    sample_payload(int(elapsed * 1000), stats, warning=warning or None, forecast=self._forecast()))
        if warning != self.warning:
            self.warning = warning
            records.migration_heartbeat(migration=self.migration, warning=warning)
            if warning:
                _log(self.ctx, warning, level=JobLogLevelChoices.WARNING)

    def record_completed(self, stats: dict, elapsed_s: float) -> None:
        """libvirt's figures of the finished job as the last sample, so the chart ends where the
        transfer did: with nothing left to send. A job shorter than one sampling interval is
        seen active by no tick; this is then its only sample."""
        self._store(elapsed_s, compact_stats(stats),
                    sample_payload(int(elapsed_s * 1000), stats, warning=self.warning or None))

    def _store(self, elapsed_s: float, kept: dict, payload: dict, *, counted: bool = True) -> None:
        """One sample stored and sent to the page (and the caller's progress callback)."""
        records.migration_sample_add(migration=self.migration, elapsed_ms=int(elapsed_s * 1000), stats=kept,
                                     payload=payload)
        if counted:
            self.samples += 1
        if self.on_progress is not None:
            self.on_progress(payload)

    def _act(self, done: str, call, *args) -> bool:
        try:
            call(self.conn, self.uuid, *args)
        except AdapterError as exc:
            _log(self.ctx, f"{done.split(';')[0]} failed: {exc.message}", level=JobLogLevelChoices.WARNING)
            return False
        _log(self.ctx, done)
        return True

    def _adapt(self, step: policy.AdaptiveStep, elapsed: float) -> None:
        """Act on one step of the adaptive policy; audited and logged whether or not libvirt took it."""
        if step.action == policy.AdaptiveAction.RAISE_DOWNTIME:
            self.adaptive_downtime = step.downtime_ms  # asked once, whatever libvirt answers
            done = self._act(step.reason, migration_adapter.set_max_downtime, step.downtime_ms)
        else:
            self.postcopy_started = True
            done = self._act(step.reason, migration_adapter.start_postcopy)
        self.adaptive_steps.append(f"{elapsed:.1f} s: {step.action}{'' if done else ' (refused by libvirt)'}")
        if done and self.last_stats:
            self._mark_step(1 if step.action == policy.AdaptiveAction.RAISE_DOWNTIME else 2, elapsed)
        audit_record_now(
            actor=Actor.system(), action=A.ADAPTIVE,
            result=AuditResultChoices.OK if done else AuditResultChoices.FAILED, target=self.migration,
            parameters={"action": str(step.action), "downtime_ms": step.downtime_ms, "elapsed_s": round(elapsed, 1)},
            message=step.reason + ("." if done else "; libvirt refused it."), job=self.migration.job,
        )

    def _forecast(self) -> str:
        """When it will finish, or what is being done about it, in words (policy.forecast)."""
        allowed = (self.forcing_downtime or self.adaptive_downtime or self.options.max_downtime_ms
                   or policy.QEMU_DEFAULT_DOWNTIME_MS)
        return policy.forecast_text(policy.forecast(self.infos, downtime_ms=allowed), self.options,
                                    downtime_ms=self.adaptive_downtime, postcopy_started=self.postcopy_started)

    def _mark_step(self, code: int, elapsed: float) -> None:
        """A sample where the adaptive policy acted (the last stats read, with the step's mark), for the chart."""
        kept = {**compact_stats(self.last_stats), ADAPTIVE_STEP_KEY: code}
        self._store(elapsed, kept, sample_payload(int(elapsed * 1000), {**self.last_stats, **kept},
                                                  warning=self.warning or None, forecast=self._forecast()),
                    counted=False)

    def abort(self, why: str) -> None:
        self.abort_sent = True
        self._act(f"{why}; libvirt job aborted (the guest stays on the source)", migration_adapter.abort_job)

    def force_complete(self, why: str) -> None:
        if policy.force_complete_action(self.options) == policy.ForceCompleteAction.POSTCOPY:
            if not self.postcopy_started:
                self.postcopy_started = self._act(f"{why}: switched to post-copy", migration_adapter.start_postcopy)
            return
        if self.forcing_downtime is None:
            self.forcing_downtime = self.options.max_downtime_ms or policy.DEFAULT_MAX_DOWNTIME_MS
            _log(self.ctx, f"{why}: raising the allowed downtime step by step up to "
                           f"{FORCE_COMPLETE_MAX_DOWNTIME_MS} ms")
        self.next_force_step = 0.0

    def _raise_downtime(self) -> None:
        current = self.forcing_downtime or 0
        if current >= FORCE_COMPLETE_MAX_DOWNTIME_MS:
            return
        nxt = policy.next_downtime_ms(current, max_ms=FORCE_COMPLETE_MAX_DOWNTIME_MS)
        self.forcing_downtime = nxt
        self.next_force_step = time.monotonic() + FORCE_COMPLETE_STEP_S
        self._act(f"Maximum downtime raised to {nxt} ms", migration_adapter.set_max_downtime, nxt)

    def _timeout(self, elapsed: float) -> None:
        action = self.options.timeout_action
        audit_record_now(
            actor=Actor.system(), action=A.TIMEOUT, result=AuditResultChoices.OK, target=self.migration,
            parameters={"completion_timeout_s": self.options.completion_timeout_s, "action": action},
            message=f"Completion timeout ({self.options.completion_timeout_s} s) reached after {elapsed:.0f} s: {action}.",
            job=self.migration.job,
        )
        if action == TimeoutAction.ABORT:
            self.timed_out = True
            self.abort(f"Completion timeout of {self.options.completion_timeout_s} s reached")
        else:
            self.force_complete(f"Completion timeout of {self.options.completion_timeout_s} s reached")


# ---------------------------------------------------------------------------
# The job


def run_migration(
    *, migration_id: int, ctx: JobContext, on_progress: ProgressCallback | None = None, queue_follow_up: bool = True,
) -> dict:
    """Run migration ``migration_id`` from queued to its settled outcome.

    Returns once the outcome is recorded; the figures after it are the follow-up job's
    (``run_follow_up``), queued for a worker, or, with ``queue_follow_up=False``, created for
    the caller to run (``result["follow_up_job"]``). Raises MigrationNotCompleted (after
    recording the outcome) when the guest did not end up on the destination, so the Job row
    shows the failure too.
    """
    migration = Migration.objects.select_related("source", "destination").get(pk=migration_id)
    if not records.migration_begin(migration=migration, job=ctx.job):
        _log(ctx, f"Migration #{migration.pk} is {migration.get_status_display().lower()}; nothing to run")
        return {"status": migration.status}
    try:
        return _run(migration, ctx, on_progress, queue_follow_up)
    except MigrationNotCompleted:
        raise
    except BaseException as exc:  # timeout, bug, interrupted: never leave the record active
        _settle_after_crash(migration, ctx, exc)
        raise


def _open_both(source, destination) -> tuple[ExitStack, tuple]:
    """(stack, (source session, destination session)), their libvirt connections opened side by side.

    Closing the stack closes both; on an error nothing stays open.
    """
    stack = ExitStack()
    try:
        sessions = (stack.enter_context(access.open_session(source)),
                    stack.enter_context(access.open_session(destination)))
        for session in sessions:
            session.ssh_target  # noqa: B018 - the login details come from the database: read them in this thread
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="connect") as pool:
            opening = [pool.submit(lambda s=s: s.libvirt) for s in sessions]
            errors = [f.exception() for f in opening]
        for error in errors:
            if error is not None:
                raise error
    except BaseException:
        stack.close()
        raise
    return stack, sessions


def _run(migration: Migration, ctx: JobContext, on_progress: ProgressCallback | None, queue_follow_up: bool) -> dict:
    options = from_dict(migration.options)
    source, destination = migration.source, migration.destination

    _log(ctx, f"Checking {source.name} and {destination.name} for {migration.vm_name}")
    try:
        stack, sessions = _open_both(source, destination)
    except AdapterError as exc:
        message = f"Could not check the hosts: {exc.message}"
        record_end(migration, ctx, S.FAILED, outcome=f"Nothing was started; {migration.vm_name} was not moved.",
                   error=message, hint=exc.hint)
        raise MigrationNotCompleted(message, hint=exc.hint) from exc
    with stack:
        # The guest-agent probe starts now, beside the check, so the source answers before the switch-over.
        probe = _start_agent_probe(options, str(migration.vm_uuid), *sessions)
        if probe is not None:
            stack.callback(probe.stop, join_s=0)
        guest, check = _check(migration, options, sessions, ctx)
        if guest is None:
            return {"status": migration.status}
        flags = libvirt_flags(options)
        params = libvirt_params(options, migrate_disks=disks_to_copy(guest) if options.copy_storage else ())
        # Peer-to-peer, the *source host's* libvirtd dials this (the inventory URI): qemu+tcp/tls work from any
        # host that routes to it; for qemu+ssh the source logs in with its own root key (see p2p_error_hint).
        dest_uri = destination.effective_libvirt_uri
        if not records.migration_migrating(migration=migration, flags=flags, params=params, dest_uri=dest_uri):
            migration.refresh_from_db()
            return {"status": migration.status}
        mode = "peer-to-peer" if options.peer_to_peer else "managed"
        asked = (f"Migrating {migration.vm_name} {'live' if options.live else 'offline'} ({mode}) to "
                 f"{destination.name} — flags {flags:#x}, parameters {params or '{}'}")
        call, sampler, wall_s = _migrate_while_sampling(migration, options, ctx, on_progress, flags, params,
                                                        dest_uri, sessions, asked=asked, probe=probe)

        libvirt_aborted = isinstance(call.error, MigrationAborted)
        if call.error is not None:
            _log(ctx, f"libvirt: {call.error.message}",
                 level=JobLogLevelChoices.WARNING if libvirt_aborted else JobLogLevelChoices.ERROR)
        else:
            _log(ctx, f"libvirt's migrate call returned after {wall_s:.1f} s")
        records.migration_completing(migration=migration, phase="Asking both hosts where the guest runs")
        outcome, _src, _dst = locate_guest(migration, sessions=sessions)
        _log(ctx, outcome.reason)
        status = states.status_for_outcome(outcome.status, aborted=libvirt_aborted or sampler.abort_sent)
        final = completed_stats(migration, on_destination=status == S.SUCCEEDED, sessions=sessions)
        if final and status == S.SUCCEEDED:
            sampler.record_completed(final, wall_s)

    summary = policy.summarize(sampler.infos, final if final else None, switched_over=status == S.SUCCEEDED)
    if summary.get("total_time_s") is None:
        summary["total_time_s"] = round(wall_s, 3)
    summary["samples"] = sampler.samples
    summary["guest_agent"] = call.guest_agent
    if call.neighbours is not None:
        summary["neighbours"] = call.neighbours
    if sampler.adaptive_steps:
        summary["adaptive_steps"] = sampler.adaptive_steps
    summary["wall_time_s"] = round(wall_s, 3)
    summary["libvirt_result"] = call.error.message if call.error else "completed"
    summary["check"] = check
    if migration.libvirt_called is not None:
        summary["request_to_libvirt_ms"] = round((migration.libvirt_called - migration.created).total_seconds() * 1000)

    error = hint = ""
    if status != S.SUCCEEDED and sampler.timed_out:
        error = (
            f"The time limit was reached ({sampler.limit_s} s) and the migration was aborted"
            + (f" (libvirt: {call.error.message})." if call.error else ".")
        )
        if options.completion_timeout_s:
            error = "Completion timeout: " + error[0].lower() + error[1:]
        hint = "Raise the completion timeout, limit what the guest writes, or allow auto-converge or post-copy."
    elif status != S.SUCCEEDED and call.error is not None:
        error = call.error.message
        hint = p2p_error_hint(call.error, options, dest_uri)
    if status != S.SUCCEEDED and call.error is not None and not libvirt_aborted:
        # What the last full check proved of this pair did not hold: the next migration between
        # these hosts (a retry, the run's next item) checks them in full again.
        facts_service.preflight_facts_forget(source=source, destination=destination)
    # Settled as soon as both hosts said where the guest runs: the evacuation queue, the lease and
    # the page hear it now; the guest's own pause and the inventory refresh follow in a job of
    # their own (run_follow_up), so this job, and whoever waits for it, ends here.
    record_end(migration, ctx, status, outcome=outcome.reason, repair=outcome.repair or "", error=error, hint=hint,
               summary=summary, follow_up=True, follow_up_queued=queue_follow_up)
    follow_up = records.follow_up_job(migration) if migration.follow_up == F.RUNNING else None
    if follow_up is not None:
        _log(ctx, f"Figures after the migration (inventories, the guest's own pause): job #{follow_up.pk}")
    if status != S.SUCCEEDED:
        raise MigrationNotCompleted(
            f"{migration.vm_name}: {status.label.lower()}. {outcome.reason}",
            hint=outcome.repair or hint,
        )
    return {
        "status": str(status),
        "total_time_s": summary.get("total_time_s"),
        "downtime_ms": summary.get("downtime_ms"),
        "data_transferred_bytes": summary.get("data_transferred_bytes"),
        "follow_up_job": follow_up.pk if follow_up is not None else None,
    }


def _check(migration: Migration, options: MigrationOptions, sessions, ctx: JobContext):
    """The preflight right before migrating: (the guest as judged, how it was checked), or (None, …) when it ended.

    Fresh facts (recheck.facts_freshness) are re-checked where they can change, in one round
    of calls per host on the open sessions, both hosts at once; otherwise both hosts are
    gathered in full. A failing preflight is recorded and raises MigrationNotCompleted.
    """
    source, destination = migration.source, migration.destination
    guest_uuid = str(migration.vm_uuid)
    started = time.monotonic()
    copying = bool(options.copy_storage and options.live)
    kept = facts_service.preflight_facts_latest(guest_uuid=guest_uuid, source=source, destination=destination,
                                                copy_storage=copying)
    freshness = recheck.facts_freshness(
        gathered=kept.gathered if kept else None, now=timezone.now(),
        both_answered=bool(kept and kept.pair.source.reachable and kept.pair.destination.reachable),
        fresh_until=kept.fresh_until if kept else None,
    )
    found = None
    if freshness.fresh:
        found = _recheck(migration, kept.pair, kept.guest, sessions, ctx)
    if found is not None:
        pair, guest = found
        check = {"mode": "re-check", "why": freshness.reason}
    else:
        try:
            pair, guest = gather_pair(source=source, destination=destination, guest_uuid=guest_uuid, options=options,
                                      sessions=sessions)
        except AdapterError as exc:
            message = f"Could not check the hosts: {exc.message}"
            record_end(migration, ctx, S.FAILED,
                       outcome=f"Nothing was started; {migration.vm_name} was not moved.", error=message, hint=exc.hint)
            raise MigrationNotCompleted(message, hint=exc.hint) from exc
        check = {"mode": "full", "why": freshness.reason}
    check["seconds"] = round(time.monotonic() - started, 3)
    _log(ctx, f"{'Re-checked what can change' if check['mode'] == 're-check' else 'Checked both hosts in full'} "
              f"({freshness.reason}) in {check['seconds']:.2f} s")
    verdicts = run_preflight(pair, guest, options)
    records.migration_record_verdicts(migration=migration, verdicts=verdicts)
    failing = [v for v in verdicts if v.status == VerdictStatus.FAIL]
    for v in verdicts:
        if v.status != VerdictStatus.PASS:
            _log(ctx, f"Preflight {v.check}: {v.status}: {v.reason}",
                 level=JobLogLevelChoices.ERROR if v.status == VerdictStatus.FAIL else JobLogLevelChoices.WARNING)
    if overall(verdicts) == VerdictStatus.FAIL:
        message = "Preflight failed: " + "; ".join(f"{v.check}: {v.reason}" for v in failing)
        hint = " ".join(v.fix for v in failing if v.fix)
        record_end(migration, ctx, S.FAILED,
                   outcome=f"Nothing was started; {migration.vm_name} stays on {source.name}.", error=message, hint=hint)
        raise MigrationNotCompleted(message, hint=hint)
    if records.migration_controls(migration=migration)[0]:
        record_end(migration, ctx, S.ABORTED,
                   outcome=f"Aborted before libvirt was asked; {migration.vm_name} stays on {source.name}.")
        return None, check
    return guest, check


def _recheck(migration: Migration, pair, guest, sessions, ctx: JobContext):
    """Fresh facts with what can change read again from both hosts at once; None = gather in full instead."""
    src_session, dst_session = sessions
    targets = [d.target for d in guest.disks if d.source]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="recheck") as pool:
        on_source = pool.submit(migration_adapter.guest_now, src_session.libvirt, str(migration.vm_uuid),
                                disk_targets=targets)
        on_destination = pool.submit(migration_adapter.host_now, dst_session.libvirt)
        try:
            source_guest, destination_now = on_source.result(), on_destination.result()
        except AdapterError as exc:
            _log(ctx, f"The quick re-check failed ({exc.message}); checking both hosts in full",
                 level=JobLogLevelChoices.WARNING)
            return None
    try:
        return recheck.refreshed(
            pair, guest, source_guest=source_guest, destination=destination_now,
            source_in_maintenance=migration.source.in_maintenance,
            destination_in_maintenance=migration.destination.in_maintenance,
        )
    except ValueError as exc:
        _log(ctx, f"{exc}; checking both hosts in full", level=JobLogLevelChoices.WARNING)
        return None


def _migrate_while_sampling(
    migration: Migration, options: MigrationOptions, ctx: JobContext, on_progress: ProgressCallback | None,
    flags: int, params: dict, dest_uri: str, sessions, *, asked: str, probe=None,
) -> tuple[_MigrateCall, Sampler, float]:
    """libvirt's migrate call in a thread; sampling and steering in this one until it returns.

    ``asked`` (what libvirt is asked) goes to the job log once the call is made, not before:
    a log line is a write and an event, and libvirt need not wait for either.
    """
    call = _MigrateCall()
    interval = settings.VMPORTAL_MIGRATION_SAMPLE_SECONDS
    guest_uuid = str(migration.vm_uuid)
    source, destination = sessions
    src_conn = source.libvirt
    dest_conn = None if options.peer_to_peer else destination.libvirt

    def migrate() -> None:
        try:
            migration_adapter.migrate(
                src_conn, domain_uuid=guest_uuid, dest_uri=dest_uri, flags=flags, params=params,
                dest_conn=dest_conn,
            )
        except AdapterError as exc:
            call.error = exc
        except BaseException as exc:  # reported by the job thread, not lost in this one
            call.crash = exc
        finally:
            call.done.set()

    started = time.monotonic()
    called = timezone.now()
    thread = threading.Thread(target=migrate, name=f"migrate-{migration.pk}", daemon=True)
    thread.start()
    records.migration_libvirt_called(migration=migration, at=called)
    _log(ctx, asked)
    # The destination's other guests, read now and once libvirt returned (live migrations only).
    watch = neighbours.Watch(migration.destination, destination, guest_uuid) if options.live else None
    if watch is not None:
        watch.begin()
    # The sampler reads job statistics from this thread while migrate() blocks in the other one, on a
    # connection of its own opened once the call is made (libvirt's own connection would do, if need be).
    try:
        sample_conn = source.open_libvirt()
    except AdapterError as exc:
        _log(ctx, f"A second connection for sampling failed ({exc.message}); sampling on the first",
             level=JobLogLevelChoices.WARNING)
        sample_conn = src_conn
    sampler = Sampler(migration, options, sample_conn, ctx, on_progress, started)
    try:
        while not call.done.wait(interval):
            sampler.tick()
    except BaseException:
        # The job is being stopped (RQ timeout, crash): do not leave libvirt migrating unattended.
        if not call.done.is_set() and not sampler.abort_sent:
            sampler.abort("The job was interrupted")
        call.done.wait(MIGRATE_THREAD_JOIN_S)
        if probe is not None:
            probe.stop(join_s=0)
        raise
    thread.join(MIGRATE_THREAD_JOIN_S)
    wall_s = time.monotonic() - started
    if watch is not None:
        call.neighbours = watch.figures()
        if call.neighbours.get("measured"):
            _log(ctx, call.neighbours["verdict"])
    call.guest_agent = _stop_agent_probe(probe, moved=call.error is None)
    if call.guest_agent.get("measured"):
        _log(ctx, f"Guest agent: longest unanswered gap {call.guest_agent['max_gap_ms']} ms "
                  f"({call.guest_agent['answers']['source']} answers on {migration.source.name}, "
                  f"{call.guest_agent['answers']['destination']} on {migration.destination.name})")
    if call.crash is not None:
        raise call.crash
    return call, sampler, wall_s


def _start_agent_probe(options: MigrationOptions, guest_uuid: str, source, destination):
    """For a live migration: ping the guest's agent on both hosts while it moves, each on a further
    connection of its session, opened in the probe's threads (on the connection carrying the
    migrate call libvirt answers only once it returned); the source's thread first reads whether
    the guest has an agent channel at all."""
    if not options.live:
        return None
    openers = {"source": source.open_libvirt, "destination": destination.open_libvirt}
    return agent_adapter.PauseProbe(openers, guest_uuid).start()


def _stop_agent_probe(probe, *, moved: bool) -> dict:
    """Let the guest answer once on the destination (or AGENT_SETTLE_S pass), then stop and judge."""
    if probe is None:
        return agent_figures(None, channel=None, moved=moved)
    returned = time.monotonic()
    while (moved and probe.channel is not None and probe.channel.present
           and not probe.answered_since("destination", returned) and time.monotonic() - returned < AGENT_SETTLE_S):
        time.sleep(0.02)
    pause = probe.stop()
    return agent_figures(pause, channel=probe.channel, moved=moved, errors=probe.errors)


def run_follow_up(*, migration_id: int, ctx: JobContext) -> dict:
    """The follow-up job of a settled migration: both inventories refreshed, the guest's pause read.

    Never changes the outcome; what failed is said on the record (``follow_up_note``), the
    figures it could not measure stay "not measured".
    """
    migration = Migration.objects.select_related("source", "destination").get(pk=migration_id)
    if migration.follow_up != F.RUNNING:
        _log(ctx, f"Migration #{migration.pk}: nothing to follow up ({migration.get_follow_up_display().lower()})")
        return {"follow_up": migration.follow_up}
    options = from_dict(migration.options)
    since = migration.migration_started or migration.started or migration.created
    heartbeat = _follow_up(migration, options, since.timestamp(), ctx, S(migration.status))
    migration.refresh_from_db()
    return {"follow_up": migration.follow_up, "heartbeat_gap_s": heartbeat.max_gap_s if heartbeat else None,
            "note": migration.follow_up_note}


def _follow_up(
    migration: Migration, options: MigrationOptions, since_unix: float, ctx: JobContext, status: S
) -> GuestHeartbeat | None:
    """After the end is recorded: refresh both inventories, then measure the guest's own pause.

    Whatever fails here is said on the record (records.migration_follow_up_done); the
    outcome already recorded stands.
    """
    problems: list[str] = []
    try:
        problems += follow_guest(migration, status, ctx)
    except Exception as exc:  # the outcome is recorded already: say what failed, never undo it
        logger.exception("migration %s: inventory refresh after the end", migration.pk)
        problems.append(f"The inventories could not be refreshed: {type(exc).__name__}: {exc}.")
    heartbeat = None
    try:
        again = _migrated_again(migration)
        if again is not None:
            problems.append(f"The guest's heartbeat was not read: {migration.vm_name} was migrated again "
                            f"(#{again.pk}) before it was, so the pause it shows would not be this migration's.")
        else:
            heartbeat = _guest_heartbeat(migration, options, since_unix, ctx)
    except Exception as exc:
        logger.exception("migration %s: guest heartbeat after the end", migration.pk)
        problems.append(f"The guest's heartbeat could not be read: {type(exc).__name__}: {exc}.")
    records.migration_follow_up_done(migration=migration, heartbeat=heartbeat, problems=problems)
    return heartbeat


def _migrated_again(migration: Migration) -> Migration | None:
    """A later migration of the same guest that has asked libvirt already (its pause would be read too)."""
    return Migration.objects.filter(vm_uuid=migration.vm_uuid, pk__gt=migration.pk,
                                    migration_started__isnull=False).order_by("pk").first()


def _guest_heartbeat(
    migration: Migration, options: MigrationOptions, since_unix: float, ctx: JobContext
) -> GuestHeartbeat | None:
    if not options.live or not settings.VMPORTAL_GUEST_HEARTBEAT_PROBE:
        return None
    # Let the heartbeat resume on the destination before reading it (the refreshes, and the wait
    # for this job, took part of that time).
    since_end = (timezone.now() - migration.ended).total_seconds() if migration.ended else 0.0
    time.sleep(max(0.0, min(HEARTBEAT_SETTLE_S, HEARTBEAT_SETTLE_S - since_end)))
    heartbeat = probe_guest(migration.vm_name, since_unix)
    if heartbeat is not None:
        _log(ctx, f"Guest heartbeat: longest gap {heartbeat.max_gap_s:.3f} s over {heartbeat.beats} beats, "
                  f"{'continuous' if heartbeat.continuous else 'NOT continuous'}")
    return heartbeat


def _settle_after_crash(migration: Migration, ctx: JobContext, exc: BaseException) -> None:
    """The runner itself failed: ask the hosts, record the truth with the error, never stay active."""
    migration.refresh_from_db()
    if migration.is_terminal:
        return
    message = exc.message if isinstance(exc, PortalError) else f"{type(exc).__name__}: {exc}"
    logger.error("migration %s: runner failed: %s", migration.pk, message, exc_info=exc)
    try:
        outcome, _src, _dst = locate_guest(migration, job_status=migration.status, wait_for_job_s=10.0)
    except Exception:  # even asking failed: say so, and let an admin reconcile later
        logger.exception("migration %s: could not ask the hosts after the runner failed", migration.pk)
        outcome = Outcome(
            NEEDS_ATTENTION,
            f"The portal's job failed ({message}) and could not ask the hosts where {migration.vm_name} runs.",
            "Reconcile this migration from its page once both hosts answer.",
        )
    abort_requested = records.migration_controls(migration=migration)[0]
    status = states.status_for_outcome(outcome.status, aborted=abort_requested)
    record_end(migration, ctx, status, outcome=outcome.reason, repair=outcome.repair or "",
            error=f"The migration job failed: {message}")
    try:
        follow_guest(migration, status, ctx)
    except Exception:
        logger.exception("migration %s: inventory refresh after failure", migration.pk)
