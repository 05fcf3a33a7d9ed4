"""Migration options: what the admin chose, checked, and turned into libvirt's flags and parameters.

Pure: no Django, no libvirt. The libvirt binding only defines the constants of
the libvirt it was built against, so the values below are copied from
``virDomainMigrateFlags`` and the ``VIR_MIGRATE_PARAM_*`` names in
include/libvirt/libvirt-domain.h (stable ABI; they never change once released).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


class MigrateFlag(enum.IntFlag):
    """``virDomainMigrateFlags`` (libvirt-domain.h)."""

    LIVE = 1 << 0
    PEER2PEER = 1 << 1
    TUNNELLED = 1 << 2  # libvirt's spelling
    PERSIST_DEST = 1 << 3
    UNDEFINE_SOURCE = 1 << 4
    PAUSED = 1 << 5
    NON_SHARED_DISK = 1 << 6
    NON_SHARED_INC = 1 << 7
    CHANGE_PROTECTION = 1 << 8
    UNSAFE = 1 << 9
    OFFLINE = 1 << 10
    COMPRESSED = 1 << 11
    ABORT_ON_ERROR = 1 << 12
    AUTO_CONVERGE = 1 << 13
    RDMA_PIN_ALL = 1 << 14
    POSTCOPY = 1 << 15
    TLS = 1 << 16


# VIR_MIGRATE_PARAM_* names (libvirt-domain.h).
PARAM_URI = "migrate_uri"  # VIR_TYPED_PARAM_STRING; not allowed with TUNNELLED
PARAM_BANDWIDTH = "bandwidth"  # VIR_TYPED_PARAM_ULLONG, MiB/s; 0 = hypervisor default
PARAM_MIGRATE_DISKS = "migrate_disks"  # multiple strings (disk targets); not for tunnelled
PARAM_COMPRESSION = "compression"  # multiple strings: xbzrle, mt, zlib, zstd

class TimeoutAction(enum.StrEnum):
    """What the runner does when a live migration reaches its completion timeout."""

    ABORT = "abort"
    FORCE_COMPLETE = "force-complete"


TIMEOUT_ACTIONS: tuple[str, ...] = tuple(a.value for a in TimeoutAction)


@dataclass(frozen=True)
class MigrationOptions:
    """How to migrate. ``live=False`` means an offline migration: only the definition moves."""

    live: bool = True
    peer_to_peer: bool = True
    tunnelled: bool = False
    copy_storage: bool = False
    auto_converge: bool = False
    allow_postcopy: bool = False
    compressed: bool = False
    bandwidth_mibps: int | None = None
    max_downtime_ms: int | None = None
    persist_destination: bool = True
    undefine_source: bool = True
    completion_timeout_s: int | None = None
    timeout_action: str = TimeoutAction.ABORT.value  # a TimeoutAction value
    # Adaptive convergence (policy.adaptive_step), on by default: auto-converge armed from the start
    # (QEMU throttles only a guest that dirties memory faster than it is sent), the allowed downtime
    # raised to the budget when the forecast says it will not converge, then post-copy if allowed.
    adaptive: bool = True
    downtime_budget_ms: int = 300


BOOL_KEYS = frozenset(
    f.name for f in dataclasses.fields(MigrationOptions) if f.type in ("bool", bool)
)

# Inclusive bounds of the optional integers. Above these a value is a typo, not a wish:
# 100 GiB/s is beyond any NIC, a minute of downtime is not "live", a week-long job is stuck.
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "bandwidth_mibps": (1, 100_000),
    "max_downtime_ms": (1, 60_000),
    "completion_timeout_s": (1, 7 * 24 * 3600),
    "downtime_budget_ms": (1, 60_000),
}

OPTION_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(MigrationOptions))

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_BOOL_WORDS = "true/false, yes/no, on/off, 1/0"
_NONE_WORDS = frozenset({"none", "default"})
_ASCII_DIGITS = re.compile(r"[0-9]{1,12}")
_MAX_PAIR_LENGTH = 200


def _shown(text: str, limit: int = 40) -> str:
    """A value quoted for an error message, cut short so hostile input cannot flood it."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return repr(text)


def _coerce(key: str, value: object) -> object:
    """One option value from text (CLI, form) or from its JSON type; raises ValueError."""
    if key in BOOL_KEYS:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE:
            return True
        if isinstance(value, str) and value.strip().lower() in _FALSE:
            return False
        raise ValueError(f"{key}: {_shown(str(value))} is not a boolean; use {_BOOL_WORDS}")
    if key in INT_BOUNDS:
        low, high = INT_BOUNDS[key]
        allowed = f"an integer from {low} to {high}, or none"
        if value is None:
            return None
        if isinstance(value, bool):  # bool is an int subclass; True is not a bandwidth
            raise ValueError(f"{key}: {value!r} is not a number; use {allowed}")
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in _NONE_WORDS:
                return None
            # ASCII digits only: int() would also accept "١٠٠", "1_000" and "+5".
            if not _ASCII_DIGITS.fullmatch(text):
                raise ValueError(f"{key}: {_shown(value)} is not a whole number; use {allowed}")
            number = int(text)
        elif isinstance(value, int):
            number = value
        else:
            raise ValueError(f"{key}: {_shown(str(value))} is not a number; use {allowed}")
        if not low <= number <= high:
            raise ValueError(f"{key}: {number} is out of range; use {allowed}")
        return number
    if key == "timeout_action":
        if isinstance(value, str) and value.strip() in TIMEOUT_ACTIONS:
            return value.strip()
        raise ValueError(f"{key}: {_shown(str(value))} is not allowed; use one of {', '.join(TIMEOUT_ACTIONS)}")
    raise ValueError(f"unknown option {_shown(str(key))}; known options: {', '.join(OPTION_KEYS)}")


def parse_option_pairs(pairs: Iterable[str], *, base: MigrationOptions | None = None) -> MigrationOptions:
    """``["auto_converge=true", "bandwidth_mibps=100"]`` (the CLI's ``--option KEY=VALUE``) → options.

    Strict: an unknown key, a repeated key, a bad boolean or an out-of-range number
    raises ValueError naming the key and what is allowed. Combinations are checked
    separately by :func:`validate`.
    """
    changes: dict[str, object] = {}
    for pair in pairs:
        if not isinstance(pair, str):
            raise ValueError(f"option {_shown(str(pair))} is not text; use KEY=VALUE")
        if len(pair) > _MAX_PAIR_LENGTH:
            raise ValueError(f"option {_shown(pair)} is too long ({len(pair)} characters); use KEY=VALUE")
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"option {_shown(pair)} is not KEY=VALUE; known options: {', '.join(OPTION_KEYS)}")
        if key not in OPTION_KEYS:
            raise ValueError(f"unknown option {_shown(key)}; known options: {', '.join(OPTION_KEYS)}")
        if key in changes:
            raise ValueError(f"{key}: given more than once; give each option once")
        changes[key] = _coerce(key, value)
    return dataclasses.replace(base or MigrationOptions(), **changes)


def to_dict(options: MigrationOptions) -> dict[str, object]:
    """Options as JSON-friendly data (for a JSONField or the audit log)."""
    return dataclasses.asdict(options)


def from_dict(data: Mapping[str, object]) -> MigrationOptions:
    """The inverse of :func:`to_dict`, as strict as :func:`parse_option_pairs`."""
    changes = {}
    for key, value in data.items():
        if key not in OPTION_KEYS:
            raise ValueError(f"unknown option {_shown(str(key))}; known options: {', '.join(OPTION_KEYS)}")
        changes[key] = _coerce(key, value)
    return MigrationOptions(**changes)


def validate(options: MigrationOptions) -> list[str]:
    """Combinations libvirt refuses, or that make no sense; one plain sentence each. Empty = fine."""
    problems: list[str] = []
    if options.tunnelled and not options.peer_to_peer:
        problems.append(
            "Tunnelled migration requires peer-to-peer: libvirt carries the data over the "
            "connection between the two libvirt daemons, which only exists in peer-to-peer mode."
        )
    if not options.live:
        if options.copy_storage:
            problems.append(
                "Offline migration cannot copy disks (libvirt: \"offline migration cannot handle "
                "non-shared storage\"): put the disks on shared storage, or start the guest and "
                "migrate it live with copy-storage."
            )
        if not options.persist_destination:
            problems.append(
                "Offline migration only moves the definition, so it must persist it on the "
                "destination (libvirt requires VIR_MIGRATE_PERSIST_DEST with OFFLINE)."
            )
        for name, label in (
            ("allow_postcopy", "post-copy"),
            ("auto_converge", "auto-converge"),
            ("compressed", "compression"),
        ):
            if getattr(options, name):
                problems.append(
                    f"{label.capitalize()} only applies to a live migration; an offline "
                    f"migration transfers no memory. Turn {label} off or migrate live."
                )
        if options.max_downtime_ms is not None:
            problems.append(
                "Maximum downtime only applies to a live migration; an offline guest is not running."
            )
        if options.timeout_action == TimeoutAction.FORCE_COMPLETE:
            problems.append(
                "Force-complete only applies to a live migration (it switches to post-copy or "
                "raises the allowed downtime); use timeout action 'abort' for an offline migration."
            )
    if options.undefine_source and not options.persist_destination:
        problems.append(
            "Undefining the source without persisting on the destination leaves no persistent "
            "definition anywhere: the guest would vanish the first time it is shut down. "
            "Persist on the destination, or keep the source definition."
        )
    return problems


def libvirt_flags(options: MigrationOptions) -> int:
    """The ``virDomainMigrateFlags`` bit set for these options (as a plain int for the binding)."""
    flags = MigrateFlag(0)
    flags |= MigrateFlag.LIVE if options.live else MigrateFlag.OFFLINE
    if options.peer_to_peer:
        flags |= MigrateFlag.PEER2PEER
    if options.tunnelled:
        flags |= MigrateFlag.TUNNELLED
    if options.persist_destination:
        flags |= MigrateFlag.PERSIST_DEST
    if options.undefine_source:
        flags |= MigrateFlag.UNDEFINE_SOURCE
    if options.copy_storage:
        flags |= MigrateFlag.NON_SHARED_DISK
    if options.auto_converge or (options.live and options.adaptive):
        # Adaptive: armed from the start (QEMU fixes it then), throttling only a guest that outruns the link.
        flags |= MigrateFlag.AUTO_CONVERGE
    if options.allow_postcopy:
        # Only enables it: the switch happens when we call migrateStartPostCopy (force-complete).
        flags |= MigrateFlag.POSTCOPY
    if options.compressed:
        flags |= MigrateFlag.COMPRESSED
    return int(flags)


def libvirt_params(
    options: MigrationOptions,
    *,
    migrate_disks: Sequence[str] = (),
    migrate_uri: str | None = None,
) -> dict[str, object]:
    """Typed parameters for ``virDomainMigrateToURI3`` / ``migrate3``.

    ``migrate_disks`` are the disk targets ("vda", …) to copy when copy_storage is
    chosen; libvirt accepts that list only for direct (not tunnelled) migration, so
    it is left out when tunnelled (libvirt then copies every writable non-shared disk).
    ``migrate_uri`` picks the network the data flows over; also not for tunnelled.
    Max downtime is not a migration parameter: the runner sets it during the job with
    ``migrateSetMaxDowntime``.
    """
    params: dict[str, object] = {}
    if options.bandwidth_mibps is not None:
        params[PARAM_BANDWIDTH] = int(options.bandwidth_mibps)
    if options.copy_storage and migrate_disks and not options.tunnelled:
        params[PARAM_MIGRATE_DISKS] = list(migrate_disks)
    if migrate_uri and not options.tunnelled:
        params[PARAM_URI] = migrate_uri
    return params
