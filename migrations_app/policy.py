"""Migration policy: progress, convergence, timeout, force-complete, downtime steps, and job timeouts.

Pure functions over numbers, in the manner of Nova's virt/libvirt/migration.py: the
runner polls libvirt, normalises each poll into a :class:`JobInfo`, and asks these
functions what to do. Nothing here talks to libvirt.

libvirt's job-stats units: times in milliseconds, sizes in bytes, ``memory_bps``
in bytes/s, ``memory_dirty_rate`` in pages/s (times ``memory_page_size`` bytes).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from hosts import disk_sizes

from .options import MigrationOptions, TimeoutAction


class JobType(enum.IntEnum):
    """``virDomainJobType`` (libvirt-domain.h), the "type" of job stats."""

    NONE = 0
    BOUNDED = 1
    UNBOUNDED = 2
    COMPLETED = 3
    FAILED = 4
    CANCELLED = 5


# Page size libvirt assumes when it does not report memory_page_size (x86 base pages).
DEFAULT_PAGE_SIZE = 4096
# Consecutive polls in which the guest dirties memory faster than we send it.
DIRTY_OUTRUNS_SAMPLES = 3
# Consecutive memory iterations whose remaining bytes do not shrink.
STALLED_ITERATIONS = 3
# Nova's defaults (live_migration_downtime, _steps, _delay).
DEFAULT_MAX_DOWNTIME_MS = 500
# The pause QEMU allows when nobody set one (its downtime-limit default).
QEMU_DEFAULT_DOWNTIME_MS = 300
DOWNTIME_STEPS = 10
DOWNTIME_DELAY_S = 75  # per GiB of guest memory, between steps


def _int(stats: Mapping[str, object], key: str) -> int | None:
    value = stats.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class JobInfo:
    """One poll of a migration job, whichever libvirt API it came from. ``None`` = not reported."""

    type: JobType = JobType.NONE
    time_elapsed_ms: int | None = None
    time_remaining_ms: int | None = None
    data_total: int | None = None
    data_processed: int | None = None
    data_remaining: int | None = None
    memory_total: int | None = None
    memory_processed: int | None = None
    memory_remaining: int | None = None
    memory_iteration: int | None = None
    memory_dirty_rate: int | None = None  # pages/s
    memory_page_size: int | None = None  # bytes
    memory_bps: int | None = None
    disk_total: int | None = None
    disk_processed: int | None = None
    disk_remaining: int | None = None
    disk_bps: int | None = None
    downtime_ms: int | None = None
    setup_time_ms: int | None = None
    error: str | None = None

    @classmethod
    def from_stats(cls, stats: Mapping[str, object] | None) -> JobInfo:
        """From ``virDomainGetJobStats`` (``dom.jobStats()``): a dict; unknown or odd values become None."""
        stats = stats or {}
        raw_type = _int(stats, "type")
        try:
            job_type = JobType(raw_type) if raw_type is not None else JobType.NONE
        except ValueError:
            job_type = JobType.NONE
        error = stats.get("errmsg")
        return cls(
            type=job_type,
            time_elapsed_ms=_int(stats, "time_elapsed"),
            time_remaining_ms=_int(stats, "time_remaining"),
            data_total=_int(stats, "data_total"),
            data_processed=_int(stats, "data_processed"),
            data_remaining=_int(stats, "data_remaining"),
            memory_total=_int(stats, "memory_total"),
            memory_processed=_int(stats, "memory_processed"),
            memory_remaining=_int(stats, "memory_remaining"),
            memory_iteration=_int(stats, "memory_iteration"),
            memory_dirty_rate=_int(stats, "memory_dirty_rate"),
            memory_page_size=_int(stats, "memory_page_size"),
            memory_bps=_int(stats, "memory_bps"),
            disk_total=_int(stats, "disk_total"),
            disk_processed=_int(stats, "disk_processed"),
            disk_remaining=_int(stats, "disk_remaining"),
            disk_bps=_int(stats, "disk_bps"),
            downtime_ms=_int(stats, "downtime"),
            setup_time_ms=_int(stats, "setup_time"),
            error=str(error) if error else None,
        )

    @classmethod
    def from_job_info(cls, info: Sequence[int] | None) -> JobInfo:
        """From the older ``virDomainGetJobInfo`` (``dom.jobInfo()``): a list of 12 numbers.

        Order: type, time elapsed, time remaining, data total/processed/remaining,
        memory total/processed/remaining, file total/processed/remaining.
        """
        values = list(info or ()) + [None] * 12
        raw = dict(zip(
            ("type", "time_elapsed", "time_remaining", "data_total", "data_processed", "data_remaining",
             "memory_total", "memory_processed", "memory_remaining", "disk_total", "disk_processed",
             "disk_remaining"),
            values,
        ))
        return cls.from_stats(raw)

    @property
    def is_active(self) -> bool:
        return self.type in (JobType.BOUNDED, JobType.UNBOUNDED)

    @property
    def progress_pct(self) -> float | None:
        """Share of the data already sent, 0–100; None when libvirt gave no totals yet."""
        if self.type == JobType.COMPLETED:
            return 100.0
        if not self.data_total or self.data_remaining is None:
            return None
        done = 100.0 * (self.data_total - self.data_remaining) / self.data_total
        return max(0.0, min(100.0, done))

    @property
    def transfer_bps(self) -> int | None:
        """Bytes per second going to the destination (memory plus disks)."""
        if self.memory_bps is None and self.disk_bps is None:
            return None
        return (self.memory_bps or 0) + (self.disk_bps or 0)

    @property
    def dirty_bps(self) -> int | None:
        """Bytes per second the guest dirties (pages/s × page size)."""
        if self.memory_dirty_rate is None:
            return None
        return self.memory_dirty_rate * (self.memory_page_size or DEFAULT_PAGE_SIZE)

    @property
    def eta_s(self) -> float | None:
        """Seconds to go: libvirt's own estimate if it gave one, else remaining / net rate; None if unknown or never."""
        if self.time_remaining_ms:
            return self.time_remaining_ms / 1000
        transfer = self.transfer_bps
        if self.data_remaining is None or not transfer:
            return None
        net = transfer - (self.dirty_bps or 0)
        if net <= 0:
            return None  # dirtied as fast as sent: no finish in sight
        return self.data_remaining / net


# ---------------------------------------------------------------------------
# Convergence


def _dirty_outruns_transfer(samples: Sequence[JobInfo], count: int = DIRTY_OUTRUNS_SAMPLES) -> bool:
    recent = samples[-count:]
    if len(recent) < count:
        return False
    return all(
        s.dirty_bps is not None and s.transfer_bps is not None and s.dirty_bps > s.transfer_bps for s in recent
    )


def remaining_per_iteration(samples: Sequence[JobInfo]) -> list[int]:
    """Memory left at the start of each iteration (the highest value seen in it), oldest first."""
    peaks: dict[int, int] = {}
    for s in samples:
        if s.memory_iteration is None or s.memory_remaining is None:
            continue
        peaks[s.memory_iteration] = max(peaks.get(s.memory_iteration, 0), s.memory_remaining)
    return [peaks[i] for i in sorted(peaks)]


def _remaining_stalled(samples: Sequence[JobInfo], count: int = STALLED_ITERATIONS) -> bool:
    values = remaining_per_iteration(samples)[-(count + 1):]
    if len(values) < count + 1:
        return False
    return all(later >= earlier for earlier, later in pairwise(values))


def is_converging(samples: Sequence[JobInfo]) -> bool:
    """False once the guest dirties memory faster than we send it for a few polls, or the
    memory left at each iteration stops shrinking. With too few samples to tell: True."""
    return not (_dirty_outruns_transfer(samples) or _remaining_stalled(samples))


def convergence_warning(samples: Sequence[JobInfo], options: MigrationOptions) -> str | None:
    """Plain-words warning for the progress page, suggesting only what these options can still change."""
    if not options.live or is_converging(samples):
        return None
    last = samples[-1]
    if _dirty_outruns_transfer(samples):
        cause = (
            f"The guest changes memory faster ({_rate(last.dirty_bps)}) than it is sent "
            f"({_rate(last.transfer_bps)})"
        )
    else:
        cause = f"The memory left to send has not shrunk over the last {STALLED_ITERATIONS} passes"
    ideas: list[str] = []
    if options.adaptive:
        ideas.append("let adaptive convergence act (auto-converge is slowing the guest's CPUs"
                     + (", then post-copy" if options.allow_postcopy else "") + ")")
    elif not options.auto_converge:
        ideas.append("enable auto-converge (slows the guest's CPUs until memory catches up)")
    if options.allow_postcopy:
        ideas.append("force-complete now to switch to post-copy (the guest runs on the destination at once)")
    else:
        ideas.append("allow post-copy next time, so force-complete can switch over at once")
    downtime = options.max_downtime_ms if options.max_downtime_ms is not None else DEFAULT_MAX_DOWNTIME_MS
    ideas.append(f"raise the maximum downtime (now {downtime} ms) so the final pause can carry more")
    if options.bandwidth_mibps is not None:
        ideas.append(f"raise or remove the bandwidth limit (now {options.bandwidth_mibps} MiB/s)")
    return f"{cause}, so the migration may never finish. You can " + "; or ".join(ideas) + "."


# Adaptive convergence: judged once the guest's memory went round this many passes.
ADAPTIVE_AFTER_PASSES = 2
DEFAULT_DOWNTIME_BUDGET_MS = 300


class AdaptiveAction(enum.StrEnum):
    RAISE_DOWNTIME = "raise_downtime"  # to the guest's budget
    POSTCOPY = "postcopy"  # the guest runs on the destination at once; its pages follow


@dataclass(frozen=True)
class AdaptiveStep:
    action: AdaptiveAction
    downtime_ms: int | None  # for RAISE_DOWNTIME
    reason: str  # in words, for the job log, the audit and the page


def forecast_converges(samples: Sequence[JobInfo], *, downtime_ms: int) -> bool:
    """Will the memory left fit in the allowed pause within two more passes, at the shrink rate seen so far?

    The memory left at the start of each pass shrinks by a ratio r from one pass to the next;
    two passes on, ``left × r²`` must be sendable within ``downtime_ms`` at the rate seen now.
    Too little to tell (one pass, no rate): True.
    """
    left = remaining_per_iteration(samples)
    rate = samples[-1].transfer_bps if samples else None
    if len(left) < 2 or not rate or left[-2] <= 0:
        return True
    ratio = min(1.0, left[-1] / left[-2])
    return left[-1] * ratio * ratio <= rate * downtime_ms / 1000


def will_not_converge(samples: Sequence[JobInfo], *, downtime_ms: int = DEFAULT_DOWNTIME_BUDGET_MS) -> bool:
    """The verdict once memory went round ADAPTIVE_AFTER_PASSES passes: not converging (is_converging),
    or shrinking too slowly to finish within two more passes (forecast_converges)."""
    passes = max((s.memory_iteration or 0 for s in samples), default=0)
    if passes < ADAPTIVE_AFTER_PASSES:
        return False
    return not is_converging(samples) or not forecast_converges(samples, downtime_ms=downtime_ms)


def adaptive_step(
    samples: Sequence[JobInfo], options: MigrationOptions, *, downtime_ms: int | None, postcopy_started: bool,
) -> AdaptiveStep | None:
    """What the adaptive policy does now, if anything (pure; the runner acts and records it).

    Auto-converge is armed when the migration starts (libvirt_flags) and throttles in QEMU by
    itself. When the forecast says the guest will not converge: first the allowed downtime is
    raised to the guest's budget (if below it), then, where post-copy is allowed, the migration
    switches to post-copy. Nothing is done twice, nothing for an offline migration or with
    ``adaptive`` off.
    """
    budget = options.downtime_budget_ms or DEFAULT_DOWNTIME_BUDGET_MS
    if not options.live or not options.adaptive or postcopy_started or not will_not_converge(
            samples, downtime_ms=max(budget, downtime_ms or 0)):
        return None
    last = samples[-1]
    why = (f"not converging after {last.memory_iteration} passes (dirtied {_rate(last.dirty_bps)}, "
           f"sent {_rate(last.transfer_bps)})")
    if downtime_ms is None or downtime_ms < budget:
        return AdaptiveStep(AdaptiveAction.RAISE_DOWNTIME, budget,
                            f"Adaptive convergence: {why}; allowed downtime raised to the guest's budget of {budget} ms")
    if options.allow_postcopy:
        return AdaptiveStep(AdaptiveAction.POSTCOPY, None,
                            f"Adaptive convergence: {why} with {downtime_ms} ms allowed; switching to post-copy")
    return None


# ---------------------------------------------------------------------------
# Forecast: when will it finish, from the trend over passes


class ForecastVerdict(enum.StrEnum):
    FINISHING = "finishing"  # the memory left fits the allowed pause now or within a few passes
    NOT_CONVERGING = "not_converging"  # at this trend it never fits
    UNKNOWN = "unknown"  # too early to tell


@dataclass(frozen=True)
class Forecast:
    verdict: ForecastVerdict
    eta_s: float | None  # seconds to go, when finishing
    passes_left: int | None  # more passes over memory after this one, when known


MAX_FORECAST_PASSES = 30
# A pass that leaves more than this share of the one before is not shrinking: no finish in sight.
SHRINK_AT_MOST = 0.95


def forecast(samples: Sequence[JobInfo], *, downtime_ms: int) -> Forecast:
    """When the migration will finish, from the trend over passes (pure).

    Each pass sends what was left at its start while the guest dirties memory again; the
    memory left at the start of each pass shrinks by a ratio r from one pass to the next. The
    migration finishes once what is left can be sent within the allowed pause
    (``downtime_ms`` at the rate seen now). So: the rest of this pass, then ``left × r^k`` for
    each pass k until that fits. With one pass only, the net rate (sent minus dirtied) decides.
    """
    if not samples:
        return Forecast(ForecastVerdict.UNKNOWN, None, None)
    last = samples[-1]
    rate = last.transfer_bps
    now_left = last.data_remaining if last.data_remaining is not None else last.memory_remaining
    if not rate or now_left is None:
        return Forecast(ForecastVerdict.UNKNOWN, None, None)
    fits = rate * downtime_ms / 1000
    if now_left <= fits:
        return Forecast(ForecastVerdict.FINISHING, round(now_left / rate, 1), 0)
    if not is_converging(samples):
        return Forecast(ForecastVerdict.NOT_CONVERGING, None, None)
    left = remaining_per_iteration(samples)
    if len(left) < 2 or left[-2] <= 0:
        if last.time_remaining_ms:  # libvirt's own estimate, when it gives one
            return Forecast(ForecastVerdict.FINISHING, round(last.time_remaining_ms / 1000, 1), None)
        net = rate - (last.dirty_bps or 0)
        if net <= 0:
            return Forecast(ForecastVerdict.UNKNOWN, None, None)
        return Forecast(ForecastVerdict.FINISHING, round(now_left / net, 1), None)
    ratio = left[-1] / left[-2]
    if ratio > SHRINK_AT_MOST:
        return Forecast(ForecastVerdict.NOT_CONVERGING, None, None)
    seconds, size = now_left / rate, float(left[-1])
    for passes in range(1, MAX_FORECAST_PASSES + 1):
        size *= ratio
        if size <= fits:
            return Forecast(ForecastVerdict.FINISHING, round(seconds, 1), passes)
        seconds += size / rate
    return Forecast(ForecastVerdict.NOT_CONVERGING, None, None)


def forecast_text(fc: Forecast, options: MigrationOptions, *, downtime_ms: int | None, postcopy_started: bool) -> str:
    """The forecast in words for the progress page: when it finishes, or what is being done about it."""
    if postcopy_started:
        return "In post-copy: the guest runs on the destination while its last pages follow."
    if fc.verdict == ForecastVerdict.FINISHING:
        passes = ("" if fc.passes_left is None else " (this pass)" if fc.passes_left == 0
                  else f" (about {fc.passes_left} more pass{'es' if fc.passes_left != 1 else ''})")
        return f"Expected to finish in ~{_seconds(fc.eta_s)}{passes}."
    if fc.verdict == ForecastVerdict.UNKNOWN:
        return "Too early to tell when it finishes."
    if not options.live:
        return "Will not converge."
    if options.adaptive:
        budget = options.downtime_budget_ms or DEFAULT_DOWNTIME_BUDGET_MS
        doing = ["auto-converge slows the guest's CPUs until memory catches up"]
        if downtime_ms is None or downtime_ms < budget:
            doing.append(f"after {ADAPTIVE_AFTER_PASSES} passes the allowed downtime goes up to {budget} ms")
        if options.allow_postcopy:
            doing.append("then it switches to post-copy")
        return "Will not converge without help: " + "; ".join(doing) + "."
    return "Will not converge without help: see the warning above for what you can do."


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    if value < 60:
        return f"{max(1, round(value))} s"
    minutes = int(value // 60)
    return f"{minutes} min {round(value - minutes * 60)} s"


def _rate(bps: int | None) -> str:
    if bps is None:
        return "unknown rate"
    return f"{bps / 1024 / 1024:.0f} MiB/s"


# ---------------------------------------------------------------------------
# Timeout, force-complete and downtime


def should_trigger_timeout_action(elapsed_s: float, options: MigrationOptions) -> bool:
    """True once the job ran longer than the completion timeout (none set: never)."""
    if not options.completion_timeout_s:
        return False
    return elapsed_s > options.completion_timeout_s


class ForceCompleteAction(enum.StrEnum):
    """How a live migration is forced to complete."""

    POSTCOPY = "postcopy"
    RAISE_DOWNTIME = "raise_downtime"


def force_complete_action(options: MigrationOptions) -> ForceCompleteAction:
    """How to finish a live migration now: switch to post-copy if it was allowed, else allow a longer pause."""
    if options.live and options.allow_postcopy:
        return ForceCompleteAction.POSTCOPY
    return ForceCompleteAction.RAISE_DOWNTIME


def downtime_steps(max_ms: int, steps: int = DOWNTIME_STEPS) -> list[int]:
    """Nova's ladder from max/steps up to max in equal steps: ``steps + 1`` values, last = max."""
    if max_ms <= 0 or steps <= 0:
        raise ValueError("max_ms and steps must be positive")
    base = max_ms / steps
    offset = (max_ms - base) / steps
    return [int(base + offset * i) for i in range(steps + 1)]


def next_downtime_ms(current_ms: int | None, *, max_ms: int = DEFAULT_MAX_DOWNTIME_MS, steps: int = DOWNTIME_STEPS) -> int:
    """The next rung above ``current_ms`` on the ladder to ``max_ms``; ``max_ms`` once there."""
    for value in downtime_steps(max_ms, steps):
        if current_ms is None or value > current_ms:
            return value
    return max_ms


def downtime_for_elapsed(
    elapsed_s: float,
    memory_kib: int,
    *,
    max_ms: int = DEFAULT_MAX_DOWNTIME_MS,
    steps: int = DOWNTIME_STEPS,
    delay_s: float = DOWNTIME_DELAY_S,
) -> int:
    """The downtime for a job ``elapsed_s`` old: one rung per ``delay_s`` seconds per GiB of guest memory (Nova)."""
    gib = max(1.0, memory_kib / 1024 / 1024)
    ladder = downtime_steps(max_ms, steps)
    step_every = delay_s * gib
    rung = int(elapsed_s // step_every) if step_every > 0 else len(ladder) - 1
    return ladder[min(max(rung, 0), len(ladder) - 1)]


# ---------------------------------------------------------------------------
# Summary


def summarize(samples: Sequence[JobInfo], final_stats: Mapping[str, object] | JobInfo | None, *,
              switched_over: bool = True) -> dict[str, object]:
    """What the finished job page shows: times, downtime, bytes moved, passes, rates.

    ``final_stats`` are the completed job's stats (``jobStats(VIR_DOMAIN_JOB_STATS_COMPLETED)``);
    where they lack a number the last poll is used — except the downtime: a running job's
    "downtime" is libvirt's estimate of it, so only a completed job's is ``downtime_ms``; without
    one (libvirt kept no figures, as after a post-copy switch here) the last estimate is
    ``expected_downtime_ms`` and the downtime stays unknown. Without a switch-over
    (``switched_over`` False: the guest did not end up on the destination) any downtime
    libvirt gives is an estimate too.
    """
    final = final_stats if isinstance(final_stats, JobInfo) else JobInfo.from_stats(final_stats)
    last = samples[-1] if samples else JobInfo()
    downtime = final.downtime_ms if final.type == JobType.COMPLETED and switched_over else None
    estimate = None if downtime is not None else (final.downtime_ms if final.downtime_ms is not None
                                                   else last.downtime_ms)

    def pick(name: str) -> int | None:
        value = getattr(final, name)
        return value if value is not None else getattr(last, name)

    elapsed_ms = pick("time_elapsed_ms")
    data = pick("data_processed")
    iterations = [s.memory_iteration for s in (*samples, final) if s.memory_iteration is not None]
    rates = [s.transfer_bps for s in samples if s.transfer_bps]
    dirty = [s.dirty_bps for s in samples if s.dirty_bps is not None]
    return {
        "result": final.type.name.lower() if final_stats is not None else last.type.name.lower(),
        "total_time_s": elapsed_ms / 1000 if elapsed_ms is not None else None,
        "downtime_ms": downtime,
        "expected_downtime_ms": estimate,
        "setup_time_ms": pick("setup_time_ms"),
        "data_transferred_bytes": data,
        "memory_transferred_bytes": pick("memory_processed"),
        "disk_transferred_bytes": pick("disk_processed"),
        "iterations": max(iterations) if iterations else None,
        "average_bps": int(data / (elapsed_ms / 1000)) if data is not None and elapsed_ms else None,
        "peak_transfer_bps": max(rates) if rates else None,
        "peak_dirty_bps": max(dirty) if dirty else None,
        "error": final.error or last.error,
    }


# ---------------------------------------------------------------------------
# Job timeouts: each job gets an explicit one, longer than the work it bounds

PREFLIGHT_TIMEOUT_S = 180  # gathering over SSH and libvirt from two hosts
RECONCILE_TIMEOUT_S = 300  # asking two hosts, waiting up to a minute for libvirt's job to end, refreshing
FOLLOW_UP_TIMEOUT_S = 300  # after a settled migration: two inventory refreshes and the guest's heartbeat
REPAIR_TIMEOUT_S = 180  # a few chown/chmod and open checks over SSH
# Around the migration itself: checking before, settling, heartbeat and refreshes after.
MIGRATION_JOB_MARGIN_S = 600
# After the completion timeout's force-complete, how long before the portal gives up and aborts.
FORCE_COMPLETE_GRACE_S = 120

COLD_JOB_MARGIN_S = 900  # checking, defining, starting, verifying checksums, rolling back
COLD_COPY_MIN_BYTES_PER_S = 20 * 1024 * 1024  # the slowest copy rate the job timeout allows for
# A disk whose size no refresh recorded: the timeout assumes this much of it (hosts.disk_sizes), so it is generous.
COLD_ASSUMED_DISK_BYTES = disk_sizes.ASSUMED_DISK_BYTES


def migration_time_limit_s(options: MigrationOptions, *, max_seconds: int) -> int:
    """How long libvirt's part may run before the runner aborts it for good.

    ``max_seconds`` (VMPORTAL_MIGRATION_MAX_SECONDS) bounds a migration with no completion timeout.
    """
    limit = options.completion_timeout_s or max_seconds
    if options.completion_timeout_s and options.timeout_action == TimeoutAction.FORCE_COMPLETE:
        limit += FORCE_COMPLETE_GRACE_S
    return limit


def migration_job_timeout_s(options: MigrationOptions, *, max_seconds: int) -> int:
    """The RQ job's timeout: the migration's own limit plus room for checking and settling."""
    return migration_time_limit_s(options, max_seconds=max_seconds) + MIGRATION_JOB_MARGIN_S


def cold_job_timeout_s(disk_bytes: int) -> int:
    """The job's timeout: the copy at a slow rate, plus checksums on both sides, plus the rest."""
    return COLD_JOB_MARGIN_S + int(3 * disk_bytes / COLD_COPY_MIN_BYTES_PER_S)


def cold_copy_plan(disks) -> tuple[disk_sizes.SizeEstimate, int]:
    """(what the copy reads, from the inventory's recorded sizes; the job's timeout for it).

    ``disks``: the guest's inventory disks. Each file counts with its recorded size (the file's
    physical size: the copy and both checksums read all of it, holes included); a disk no refresh
    sized counts as ``COLD_ASSUMED_DISK_BYTES`` and the estimate's ``note`` says so.
    """
    estimate = disk_sizes.cold_copy_estimate(disks, assumed_each=COLD_ASSUMED_DISK_BYTES)
    return estimate, cold_job_timeout_s(estimate.bytes)
