"""Migration policy: JobInfo normalisation, convergence, timeout, force-complete, downtime steps, summary."""

from __future__ import annotations

import dataclasses

import pytest

from migrations_app import policy
from migrations_app.options import MigrationOptions
from migrations_app.policy import (
    JobInfo,
    JobType,
    convergence_warning,
    downtime_for_elapsed,
    downtime_steps,
    force_complete_action,
    is_converging,
    next_downtime_ms,
    remaining_per_iteration,
    should_trigger_timeout_action,
    summarize,
)

MIB = 1024 * 1024
GIB_KIB = 1024 * 1024


def opts(**changes) -> MigrationOptions:
    return dataclasses.replace(MigrationOptions(), **changes)


# A jobStats() dict as libvirt's QEMU driver returns it mid-migration.
RUNNING_STATS = {
    "type": 2,
    "operation": 4,
    "time_elapsed": 12500,
    "data_total": 8 * 1024 * MIB,
    "data_processed": 6 * 1024 * MIB,
    "data_remaining": 2 * 1024 * MIB,
    "memory_total": 8 * 1024 * MIB,
    "memory_processed": 6 * 1024 * MIB,
    "memory_remaining": 2 * 1024 * MIB,
    "memory_constant": 1000,
    "memory_normal": 1500000,
    "memory_normal_bytes": 6 * 1024 * MIB,
    "memory_bps": 100 * MIB,
    "memory_dirty_rate": 6400,  # pages/s
    "memory_iteration": 2,
    "memory_page_size": 4096,
    "setup_time": 15,
}


def test_from_stats_normalises_a_running_job():
    info = JobInfo.from_stats(RUNNING_STATS)
    assert info.type is JobType.UNBOUNDED and info.is_active
    assert info.time_elapsed_ms == 12500
    assert info.memory_iteration == 2
    assert info.setup_time_ms == 15
    assert info.progress_pct == pytest.approx(75.0)
    assert info.transfer_bps == 100 * MIB
    assert info.dirty_bps == 6400 * 4096 == 25 * MIB
    # 2 GiB left at 100 MiB/s sent minus 25 MiB/s re-dirtied
    assert info.eta_s == pytest.approx(2048 / 75)


@pytest.mark.parametrize(
    "stats,field,expected",
    [
        ({}, "type", JobType.NONE),
        (None, "type", JobType.NONE),
        ({"type": 3}, "type", JobType.COMPLETED),
        ({"type": 99}, "type", JobType.NONE),
        ({"type": "garbage"}, "type", JobType.NONE),
        ({"downtime": 42}, "downtime_ms", 42),
        ({"memory_bps": "12"}, "memory_bps", 12),
        ({"memory_bps": None}, "memory_bps", None),
        ({"memory_bps": True}, "memory_bps", None),
        ({"memory_bps": "fast"}, "memory_bps", None),
        ({"disk_total": 10, "disk_processed": 4, "disk_remaining": 6}, "disk_remaining", 6),
        ({"errmsg": "Unable to write to socket"}, "error", "Unable to write to socket"),
    ],
)
def test_from_stats_fields(stats, field, expected):
    assert getattr(JobInfo.from_stats(stats), field) == expected


def test_from_job_info_list():
    info = JobInfo.from_job_info([1, 3000, 9000, 100, 40, 60, 100, 40, 60, 0, 0, 0])
    assert info.type is JobType.BOUNDED
    assert (info.time_elapsed_ms, info.time_remaining_ms) == (3000, 9000)
    assert info.progress_pct == pytest.approx(40.0)
    assert info.eta_s == 9.0  # libvirt's own estimate wins
    assert JobInfo.from_job_info([]).type is JobType.NONE


@pytest.mark.parametrize(
    "fields,progress,transfer,dirty,eta",
    [
        ({}, None, None, None, None),
        ({"type": JobType.COMPLETED}, 100.0, None, None, None),
        ({"data_total": 0, "data_remaining": 0}, None, None, None, None),
        ({"data_total": 100, "data_remaining": 150}, 0.0, None, None, None),  # total grew: clamp
        ({"data_total": 100, "data_remaining": 100}, 0.0, None, None, None),
        ({"data_remaining": 100, "memory_bps": 50}, None, 50, None, 2.0),
        ({"data_remaining": 100, "memory_bps": 50, "disk_bps": 50}, None, 100, None, 1.0),
        ({"memory_dirty_rate": 10}, None, None, 40960, None),  # default 4 KiB pages
        ({"memory_dirty_rate": 10, "memory_page_size": 65536}, None, None, 655360, None),
        ({"data_remaining": 100, "memory_bps": 4096, "memory_dirty_rate": 1}, None, 4096, 4096, None),  # never
        ({"data_remaining": 100, "memory_bps": 4096, "memory_dirty_rate": 2}, None, 4096, 8192, None),
        ({"data_remaining": 100, "memory_bps": 0}, None, 0, None, None),
        ({"time_remaining_ms": 0, "data_remaining": 100, "memory_bps": 10}, None, 10, None, 10.0),
    ],
)
def test_derived_numbers(fields, progress, transfer, dirty, eta):
    info = JobInfo(**fields)
    assert info.progress_pct == progress
    assert info.transfer_bps == transfer
    assert info.dirty_bps == dirty
    assert info.eta_s == eta


# --- convergence ------------------------------------------------------------------------

def poll(iteration=None, remaining=None, sent_mib=100, dirty_pages=0):
    return JobInfo(
        type=JobType.UNBOUNDED,
        memory_iteration=iteration,
        memory_remaining=remaining,
        memory_bps=sent_mib * MIB,
        memory_dirty_rate=dirty_pages,
        memory_page_size=4096,
    )


OUTRUN = 256 * 200  # 200 MiB/s of 4 KiB pages, against 100 MiB/s sent


@pytest.mark.parametrize(
    "samples,converging",
    [
        ([], True),
        ([poll(dirty_pages=OUTRUN)] * 2, True),  # too few to tell
        ([poll(dirty_pages=OUTRUN)] * 3, False),
        ([poll(dirty_pages=OUTRUN), poll(), poll(dirty_pages=OUTRUN), poll(dirty_pages=OUTRUN)], True),
        ([poll(), poll(dirty_pages=OUTRUN), poll(dirty_pages=OUTRUN), poll(dirty_pages=OUTRUN)], False),
        ([poll(dirty_pages=256 * 100)] * 5, True),  # equal rates: not outrunning
        ([JobInfo(memory_dirty_rate=OUTRUN)] * 3, True),  # no transfer rate known: no verdict
        # remaining per iteration shrinking: fine
        ([poll(1, 8000), poll(2, 4000), poll(3, 2000), poll(4, 1000)], True),
        # flat for 3 iterations after the first: stalled
        ([poll(1, 8000), poll(2, 3000), poll(3, 3000), poll(4, 3000), poll(5, 3100)], False),
        # flat for only 2 iterations
        ([poll(1, 8000), poll(2, 3000), poll(3, 3000), poll(4, 3000)], True),
        # many polls within one iteration do not count as iterations
        ([poll(7, 5000)] * 10, True),
        # the iteration's start (its highest value) is what is compared
        ([poll(1, 9000), poll(1, 100), poll(2, 5000), poll(2, 10), poll(3, 4000), poll(4, 3000)], True),
        ([poll(None, 5000)] * 6, True),
    ],
)
def test_is_converging(samples, converging):
    assert is_converging(samples) is converging


def test_remaining_per_iteration():
    samples = [poll(1, 9000), poll(1, 100), poll(3, 4000), poll(2, 5000), poll(None, 1)]
    assert remaining_per_iteration(samples) == [9000, 5000, 4000]


STUCK = [poll(dirty_pages=OUTRUN)] * 3


@pytest.mark.parametrize(
    "samples,options,present,absent",
    [
        ([poll()] * 5, opts(), None, None),
        (STUCK, opts(live=False), None, None),
        (STUCK, opts(adaptive=False), ["faster (200 MiB/s) than it is sent (100 MiB/s)", "enable auto-converge",
                         "allow post-copy next time", "maximum downtime (now 500 ms)"], ["bandwidth limit"]),
        (STUCK, opts(auto_converge=True, allow_postcopy=True, max_downtime_ms=800, bandwidth_mibps=100),
         ["force-complete now to switch to post-copy", "(now 800 ms)", "bandwidth limit (now 100 MiB/s)"],
         ["enable auto-converge", "next time"]),
        ([poll(1, 8000), poll(2, 3000), poll(3, 3000), poll(4, 3000), poll(5, 3000)], opts(),
         ["has not shrunk over the last 3 passes"], ["faster"]),
    ],
)
def test_convergence_warning(samples, options, present, absent):
    warning = convergence_warning(samples, options)
    if present is None:
        assert warning is None
        return
    assert warning is not None
    for text in present:
        assert text in warning
    for text in absent:
        assert text not in warning


# --- timeout and force-complete -----------------------------------------------------------

@pytest.mark.parametrize(
    "elapsed,timeout,expected",
    [
        (10_000, None, False),
        (0, 60, False),
        (60, 60, False),
        (60.5, 60, True),
        (3600, 600, True),
    ],
)
def test_should_trigger_timeout_action(elapsed, timeout, expected):
    assert should_trigger_timeout_action(elapsed, opts(completion_timeout_s=timeout)) is expected


@pytest.mark.parametrize(
    "options,expected",
    [
        (opts(), "raise_downtime"),
        (opts(allow_postcopy=True), "postcopy"),
        (opts(allow_postcopy=True, live=False), "raise_downtime"),
        (opts(auto_converge=True), "raise_downtime"),
    ],
)
def test_force_complete_action(options, expected):
    assert force_complete_action(options) == expected


# --- downtime ---------------------------------------------------------------------------------

def test_downtime_steps_match_nova():
    assert downtime_steps(500, 10) == [50, 95, 140, 185, 230, 275, 320, 365, 410, 455, 500]
    assert downtime_steps(400, 4) == [100, 175, 250, 325, 400]
    with pytest.raises(ValueError):
        downtime_steps(0, 10)
    with pytest.raises(ValueError):
        downtime_steps(500, 0)


@pytest.mark.parametrize(
    "current,max_ms,steps,expected",
    [
        (None, 500, 10, 50),
        (0, 500, 10, 50),
        (50, 500, 10, 95),
        (60, 500, 10, 95),
        (455, 500, 10, 500),
        (500, 500, 10, 500),
        (900, 500, 10, 500),
        (100, 400, 4, 175),
    ],
)
def test_next_downtime_ms(current, max_ms, steps, expected):
    assert next_downtime_ms(current, max_ms=max_ms, steps=steps) == expected


@pytest.mark.parametrize(
    "elapsed,memory_kib,expected",
    [
        (0, 4 * GIB_KIB, 50),
        (299, 4 * GIB_KIB, 50),  # one rung per 75 s × 4 GiB = 300 s
        (300, 4 * GIB_KIB, 95),
        (75, 512 * 1024, 95),  # small guests count as 1 GiB
        (10**6, 4 * GIB_KIB, 500),
        (-5, 4 * GIB_KIB, 50),
    ],
)
def test_downtime_for_elapsed(elapsed, memory_kib, expected):
    assert downtime_for_elapsed(elapsed, memory_kib, max_ms=500, steps=10, delay_s=75) == expected


# --- summary ----------------------------------------------------------------------------------

def test_summarize_uses_completed_stats():
    samples = [
        JobInfo(type=JobType.UNBOUNDED, memory_iteration=1, memory_bps=50 * MIB, memory_dirty_rate=100),
        JobInfo(type=JobType.UNBOUNDED, memory_iteration=3, memory_bps=120 * MIB, memory_dirty_rate=300),
    ]
    final = {
        "type": 3, "time_elapsed": 20_000, "downtime": 48, "setup_time": 12,
        "data_processed": 2000 * MIB, "memory_processed": 1500 * MIB, "disk_processed": 500 * MIB,
        "memory_iteration": 4,
    }
    summary = summarize(samples, final)
    assert summary == {
        "result": "completed",
        "total_time_s": 20.0,
        "downtime_ms": 48,
        "expected_downtime_ms": None,
        "setup_time_ms": 12,
        "data_transferred_bytes": 2000 * MIB,
        "memory_transferred_bytes": 1500 * MIB,
        "disk_transferred_bytes": 500 * MIB,
        "iterations": 4,
        "average_bps": 100 * MIB,
        "peak_transfer_bps": 120 * MIB,
        "peak_dirty_bps": 300 * 4096,
        "error": None,
    }


def test_summarize_falls_back_to_last_poll():
    samples = [JobInfo(type=JobType.UNBOUNDED, time_elapsed_ms=5000, data_processed=10, memory_iteration=2)]
    summary = summarize(samples, None)
    assert summary["result"] == "unbounded"
    assert summary["total_time_s"] == 5.0
    assert summary["data_transferred_bytes"] == 10
    assert summary["downtime_ms"] is None
    assert summary["iterations"] == 2


@pytest.mark.parametrize(("last_poll", "final", "downtime", "expected"), [
    # A completed job's downtime is the switch-over's; the polls' estimates are not kept beside it.
    ({"type": 2, "downtime": 2000}, {"type": 3, "downtime": 40}, 40, None),
    # libvirt kept no completed figures (after a post-copy switch): the last poll's "downtime" is
    # its estimate, never recorded as the guest's downtime.
    ({"type": 2, "downtime": 2085}, None, None, 2085),
    ({"type": 2, "downtime": 2085}, {"type": 3, "time_elapsed": 7000}, None, 2085),
    # A cancelled or failed job's downtime is an estimate too (no switch-over happened).
    ({"type": 2, "downtime": 300}, {"type": 5, "downtime": 310}, None, 310),
    ({"type": 2}, None, None, None),
])
def test_only_a_completed_jobs_downtime_is_the_downtime(last_poll, final, downtime, expected):
    summary = summarize([JobInfo.from_stats(last_poll)], final)
    assert (summary["downtime_ms"], summary["expected_downtime_ms"]) == (downtime, expected)


def test_without_a_switch_over_a_completed_jobs_downtime_is_an_estimate_too():
    summary = summarize([], {"type": 3, "downtime": 40}, switched_over=False)
    assert (summary["downtime_ms"], summary["expected_downtime_ms"]) == (None, 40)


def test_summarize_failed_job_keeps_error():
    summary = summarize([], {"type": 4, "errmsg": "operation aborted: migration out job: canceled by client"})
    assert summary["result"] == "failed"
    assert "canceled by client" in summary["error"]
    assert summary["total_time_s"] is None and summary["average_bps"] is None


# --- adaptive convergence ---------------------------------------------------------------------

OUTRUN_PASS2 = [poll(1, 900, dirty_pages=OUTRUN), poll(2, 800, dirty_pages=OUTRUN), poll(2, 850, dirty_pages=OUTRUN)]
STALLED_4 = [poll(1, 900), poll(2, 600), poll(3, 600), poll(4, 650), poll(5, 700)]  # left at each pass stops shrinking
CONVERGING = [poll(1, 900), poll(2, 300), poll(3, 60)]


@pytest.mark.parametrize("samples, expected", [
    ([], False),
    (STUCK, False),  # outrunning, but no pass numbers yet: not judged before two passes
    ([poll(1, 900, dirty_pages=OUTRUN)] * 3, False),  # one pass only
    (OUTRUN_PASS2, True),
    (STALLED_4, True),
    (CONVERGING, False),
])
def test_will_not_converge(samples, expected):
    assert policy.will_not_converge(samples) is expected


# Left at the start of each pass (MiB) at 100 MiB/s sent: 300 ms of pause carries 30 MiB.
@pytest.mark.parametrize("left_mib, downtime_ms, converges", [
    ([], 300, True), ([900], 300, True),  # too little to tell
    ([900, 300], 300, False),  # 300 × (1/3)² = 33 MiB: just over the 30 MiB a pause carries
    ([900, 270], 300, True),  # 270 × 0.09 = 24 MiB: fits
    ([900, 600], 300, False),  # 600 × 0.44 = 267 MiB: not within two passes
    ([900, 600], 3000, True),  # a long pause carries it
    ([90, 86], 300, False),  # the lab's dirty guest: nearly its whole working set dirty again each pass
    ([90, 100], 300, False),  # growing
    ([64, 1], 300, True),  # a quiet guest: almost nothing left after the first pass
])
def test_forecast_converges(left_mib, downtime_ms, converges):
    samples = [poll(i + 1, left * MIB) for i, left in enumerate(left_mib)]
    assert policy.forecast_converges(samples, downtime_ms=downtime_ms) is converges


def test_a_slow_shrink_is_judged_after_two_passes_even_when_not_stalled():
    slow = [poll(1, 900 * MIB), poll(2, 600 * MIB)]
    assert policy.is_converging(slow)  # neither outrun nor stalled…
    assert policy.will_not_converge(slow)  # …but not within two more passes at this rate


@pytest.mark.parametrize("samples, changes, downtime_ms, postcopy_started, action, downtime", [
    (CONVERGING, {}, None, False, None, None),  # converging: nothing to do
    (OUTRUN_PASS2, {}, None, False, "raise_downtime", 300),  # first: the downtime up to the budget
    (OUTRUN_PASS2, {}, 120, False, "raise_downtime", 300),
    (OUTRUN_PASS2, {"downtime_budget_ms": 250}, None, False, "raise_downtime", 250),
    (OUTRUN_PASS2, {}, 300, False, None, None),  # at the budget, no post-copy: auto-converge throttles
    (OUTRUN_PASS2, {"allow_postcopy": True}, 300, False, "postcopy", None),  # then post-copy where allowed
    (OUTRUN_PASS2, {"allow_postcopy": True, "max_downtime_ms": 800}, 800, False, "postcopy", None),
    (OUTRUN_PASS2, {"allow_postcopy": True}, 300, True, None, None),  # switched already
    (STALLED_4, {}, None, False, "raise_downtime", 300),
    (OUTRUN_PASS2, {"adaptive": False}, None, False, None, None),  # turned off
    (OUTRUN_PASS2, {"live": False}, None, False, None, None),
])
def test_adaptive_step(samples, changes, downtime_ms, postcopy_started, action, downtime):
    step = policy.adaptive_step(samples, opts(**changes), downtime_ms=downtime_ms, postcopy_started=postcopy_started)
    if action is None:
        assert step is None
        return
    assert step.action == action and step.downtime_ms == downtime
    assert "not converging after 2 passes" in step.reason or "passes" in step.reason


def test_adaptive_steps_in_sequence_end_in_post_copy_at_most_once():
    """The runner's loop over a guest that never converges: downtime to the budget, then post-copy, then nothing."""
    options, downtime, started, taken = opts(allow_postcopy=True), None, False, []
    for _ in range(5):
        step = policy.adaptive_step(OUTRUN_PASS2, options, downtime_ms=downtime, postcopy_started=started)
        if step is None:
            continue
        taken.append(step.action)
        if step.action == "raise_downtime":
            downtime = step.downtime_ms
        else:
            started = True
    assert taken == ["raise_downtime", "postcopy"]


# --- forecast from the trend over passes -----------------------------------------------

from migrations_app.policy import Forecast, ForecastVerdict, forecast, forecast_text  # noqa: E402

FV = ForecastVerdict


@pytest.mark.parametrize(
    "samples,downtime_ms,expected",
    [
        ([], 300, Forecast(FV.UNKNOWN, None, None)),
        ([JobInfo(memory_remaining=500 * MIB)], 300, Forecast(FV.UNKNOWN, None, None)),  # no rate yet
        # What is left fits the pause now (100 MiB/s × 300 ms = 30 MiB).
        ([poll(3, 20 * MIB)], 300, Forecast(FV.FINISHING, 0.2, 0)),
        # One pass only: the net rate decides (1000 MiB at 100 - 0 MiB/s).
        ([poll(1, 1000 * MIB)], 300, Forecast(FV.FINISHING, 10.0, None)),
        # One pass only, dirtied as fast as sent: no finish in sight, too early to say never.
        ([poll(1, 1000 * MIB, dirty_pages=256 * 100)], 300, Forecast(FV.UNKNOWN, None, None)),
        # The guest outruns the link: never.
        ([poll(1, 1000 * MIB, dirty_pages=OUTRUN)] * 3, 300, Forecast(FV.NOT_CONVERGING, None, None)),
        # Halving each pass: the rest of this pass (4 s), then 250, 125, 62.5, 31.25 MiB; 15.6 fits.
        ([poll(1, 1000 * MIB), poll(2, 500 * MIB), poll(2, 400 * MIB)], 300, Forecast(FV.FINISHING, 8.7, 5)),
        # The same trend with a longer allowed pause (60 MiB fits): one pass fewer.
        ([poll(1, 1000 * MIB), poll(2, 500 * MIB), poll(2, 400 * MIB)], 600, Forecast(FV.FINISHING, 8.4, 4)),
        # Barely shrinking (97 % each pass): never.
        ([poll(1, 1000 * MIB), poll(2, 970 * MIB)], 300, Forecast(FV.NOT_CONVERGING, None, None)),
        # Shrinking, but not within MAX_FORECAST_PASSES at a 10 ms pause (1 MiB fits).
        ([poll(1, 1000 * MIB), poll(2, 900 * MIB)], 10, Forecast(FV.NOT_CONVERGING, None, None)),
    ],
)
def test_forecast_from_the_trend_over_passes(samples, downtime_ms, expected):
    assert forecast(samples, downtime_ms=downtime_ms) == expected


@pytest.mark.parametrize(
    "fc,options,downtime_ms,postcopy_started,expected",
    [
        (Forecast(FV.FINISHING, 8.7, 5), opts(), None, False, "Expected to finish in ~9 s (about 5 more passes)."),
        (Forecast(FV.FINISHING, 0.2, 0), opts(), None, False, "Expected to finish in ~1 s (this pass)."),
        (Forecast(FV.FINISHING, 75.0, 1), opts(), None, False, "Expected to finish in ~1 min 15 s (about 1 more pass)."),
        (Forecast(FV.FINISHING, 10.0, None), opts(), None, False, "Expected to finish in ~10 s."),
        (Forecast(FV.UNKNOWN, None, None), opts(), None, False, "Too early to tell when it finishes."),
        (Forecast(FV.NOT_CONVERGING, None, None), opts(), None, False,
         "Will not converge without help: auto-converge slows the guest's CPUs until memory catches up; "
         "after 2 passes the allowed downtime goes up to 300 ms."),
        (Forecast(FV.NOT_CONVERGING, None, None), opts(allow_postcopy=True), 300, False,
         "Will not converge without help: auto-converge slows the guest's CPUs until memory catches up; "
         "then it switches to post-copy."),
        (Forecast(FV.NOT_CONVERGING, None, None), opts(adaptive=False), None, False,
         "Will not converge without help: see the warning above for what you can do."),
        (Forecast(FV.NOT_CONVERGING, None, None), opts(allow_postcopy=True), 300, True,
         "In post-copy: the guest runs on the destination while its last pages follow."),
    ],
)
def test_forecast_in_words(fc, options, downtime_ms, postcopy_started, expected):
    assert forecast_text(fc, options, downtime_ms=downtime_ms, postcopy_started=postcopy_started) == expected
