"""Display filters for migration pages (sizes in bytes, rates in bytes/s, times in ms or s)."""

from django import template

from migrations_app.progress import human_bytes, human_rate

register = template.Library()


@register.filter
def bytes_h(value) -> str:
    return human_bytes(value) if isinstance(value, (int, float)) else "—"


@register.filter
def rate_h(value) -> str:
    return human_rate(value) if isinstance(value, (int, float)) else "—"


@register.filter
def ms_h(value) -> str:
    """42 → "42 ms"; 1234 → "1.23 s"."""
    if not isinstance(value, (int, float)):
        return "—"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"


@register.filter
def secs_h(value) -> str:
    """3.2 → "3.2 s"; 125 → "2 min 5 s"; 7260 → "2 h 1 min"."""
    if not isinstance(value, (int, float)):
        return "—"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(round(value)), 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s"


@register.filter
def mib(value) -> str:
    """16777216 → "16.0 MiB" (cold-migration copies are compared in MiB)."""
    if not isinstance(value, (int, float)):
        return "—"
    return f"{value / 2**20:.1f} MiB"


@register.filter
def pct_h(value) -> str:
    """12.34 → "12.3 %"; None → "—"."""
    return f"{value:.1f} %" if isinstance(value, (int, float)) else "—"
