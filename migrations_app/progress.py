"""What is kept and shown of a running migration's progress (pure).

The runner stores each poll of libvirt's job statistics (numbers only, ``compact_stats``);
``payloads.sample_payload`` turns one into what the browser and ``vm_migrate --wait`` show,
and ``progress_line`` prints that payload for a terminal.
"""

from __future__ import annotations

from collections.abc import Mapping

from .policy import JobInfo

# The job-stats fields worth keeping per sample (libvirt's names).
KEPT_STATS = (
    "type",
    "time_elapsed",
    "time_remaining",
    "data_total",
    "data_processed",
    "data_remaining",
    "memory_total",
    "memory_processed",
    "memory_remaining",
    "memory_iteration",
    "memory_dirty_rate",
    "memory_page_size",
    "memory_bps",
    "memory_postcopy_requests",
    "disk_total",
    "disk_processed",
    "disk_remaining",
    "disk_bps",
    "downtime",
    "setup_time",
    "auto_converge_throttle",
)


def compact_stats(stats: Mapping[str, object]) -> dict[str, int]:
    """The kept numeric fields of raw job stats (what a MigrationSample stores)."""
    return {
        key: int(value)
        for key in KEPT_STATS
        if isinstance((value := stats.get(key)), (int, float)) and not isinstance(value, bool)
    }


def memory_done_pct(info: JobInfo) -> float | None:
    """Share of guest memory not (or no longer) waiting to be sent, 0–100.

    ``memory_processed`` counts pages sent again in later passes, so it can exceed the
    total; "total minus remaining" is what a progress bar should show.
    """
    if not info.memory_total or info.memory_remaining is None:
        return None
    done = 100.0 * (info.memory_total - info.memory_remaining) / info.memory_total
    return round(max(0.0, min(100.0, done)), 1)


def human_bytes(value: float | int | None) -> str:
    """1536 → "1.5 KiB"; None → "—"."""
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def human_rate(bps: float | int | None) -> str:
    """Bytes per second in MiB/s (what admins compare with --bandwidth)."""
    if bps is None:
        return "—"
    return f"{bps / 1024 / 1024:.1f} MiB/s"


def progress_line(payload: Mapping[str, object]) -> str:
    """One line for a terminal: "12.3 s  pass 2  67.0%  left 21.0 MiB  at 31.2 MiB/s  dirty 4.0 MiB/s  ETA 3 s"."""
    parts = [f"{payload['t']:>7.1f} s"]
    if payload.get("iteration"):  # 0 = still setting up
        parts.append(f"pass {payload['iteration']}")
    if payload.get("pct") is not None:
        parts.append(f"{payload['pct']:5.1f}%")
    parts.append(f"left {human_bytes(payload.get('data_remaining'))}")
    parts.append(f"at {human_rate(payload.get('bps'))}")
    parts.append(f"dirty {human_rate(payload.get('dirty_bps'))}")
    if payload.get("eta_s") is not None:
        parts.append(f"ETA {payload['eta_s']:.0f} s")
    if payload.get("step"):
        parts.append(f"[adaptive: {payload['step']}]")
    if payload.get("forecast"):
        parts.append(f"— {payload['forecast']}")
    return "  ".join(parts)
