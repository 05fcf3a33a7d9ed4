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
def minus(value, other) -> int:
    try:
        return int(value) - int(other)
    except (TypeError, ValueError):
        return 0
