"""Display filters shared by all templates."""

from django import template

register = template.Library()

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


@register.filter
def kib(value) -> str:
    """1048576 → "1 GiB", 65536 → "64 MiB" (binary units, at most one decimal)."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return ""
    unit = 0
    while size >= 1024 and unit < len(_UNITS) - 1:
        size /= 1024
        unit += 1
    text = f"{size:.1f}".rstrip("0").rstrip(".")
    return f"{text} {_UNITS[unit]}"


@register.filter
def size_bytes(value) -> str:
    """1610612736 → "1.5 GiB", 512 → "512 B"; "" for an unknown (None) size."""
    if value is None or value == "":
        return ""
    try:
        size = int(value)
    except (TypeError, ValueError):
        return ""
    if size < 1024:
        return f"{size} B"
    return kib(size / 1024)


@register.filter
def percent_of(value, whole) -> str:
    """What share of ``whole`` ``value`` is, as "37 %"; "" when either is unknown or ``whole`` is 0."""
    try:
        part, total = float(value), float(whole)
    except (TypeError, ValueError):
        return ""
    if total <= 0:
        return ""
    return f"{min(100.0 * part / total, 999):.0f} %"


@register.filter
def minus(value, other) -> int:
    try:
        return int(value) - int(other)
    except (TypeError, ValueError):
        return 0
