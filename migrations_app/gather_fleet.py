"""Gather the preflight facts for many guests of one host against many destinations at once.

``gather_evacuation(source=…, destinations=…, guest_uuids=…, options=…)`` opens one session
per inventory host (``hosts.access``) and returns ``FleetFacts``: for every guest ``g`` and
destination ``d``, ``fleet.pair(g, d)`` and ``fleet.guest_for(g, d)`` are exactly the
``(PairFacts, GuestSide)`` that ``gather.gather`` returns for that one guest and pair (see
its docstring for what each fact means). ``gather_fleet`` takes plain ``Endpoint``s and does
all I/O through the adapters; ``gather.gather`` is this with one guest and one destination.

What is probed once, whatever the number of guests:

- per host: the connections, libvirt facts, guest list, storage pools (source and each
  destination once); per destination: who QEMU runs as (qemu.conf);
- per pair (source, destination): name resolution both ways, one one-shot listener on the
  destination and one connection attempt to it from the source;
- per disk directory: one marker written on the source (several in one command), read by
  each destination;
- per (disk path, destination): one disk probe (a destination's all in one command, since
  each remote command costs a login shell); per path on the source, one digest;
- per (guest ``<cpu>`` as libvirt migrates it, destination): one CPU comparison, so guests
  with the same CPU definition share it.

The probes run concurrently on a bounded pool, in four short rounds:

1. Connect every host; libvirt facts and guest lists.
2. Each guest's migratable XML and running jobs (and disk sizes for copy-storage) on the
   source; name resolution both ways and qemu.conf per destination; a one-shot listener on
   each destination; one marker per disk directory on the source.
3. Each as soon as what it needs has come: the source connects to each listener once it
   is up; each destination reads the markers and tests every disk path in one command once
   the markers are written and its qemu.conf read; each distinct guest CPU is compared on
   each destination.
4. The markers are removed; read-only disks that are not shared are compared by content;
   a port that timed out is retried on the SSH port.

A destination whose libvirt or SSH does not answer gives ``reachable=False`` facts for its
pairs, never an exception. Raises DomainNotFound when the source answers but lacks a guest
asked for.

Per-destination disk facts: a ``GuestSide``'s ``DiskFact``s carry what one destination proved
(``same_file_on_destination``, ``destination_can_open``, ``perm_detail``), so ``guests`` holds
each guest as the source describes it, those three left unchecked (None, None, ""), and
``guest_for(g, d)`` the same guest with ``d``'s disk facts — the one to judge with ``pair(g, d)``.
"""

from __future__ import annotations

import logging
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from hosts.adapters import libvirt as lv
from hosts.adapters import migration as mg
from hosts.adapters import probes
from hosts.adapters.batch import run_step, run_steps
from hosts.adapters.errors import AdapterError, DomainNotFound
from hosts.adapters.facts import resolve_names_step
from hosts.adapters.probes import (
    DiskProbe,
    DiskQuery,
    can_open,
    connects_step,
    content_digests_step,
    listener_step,
    probe_disks_step,
    qemu_identity_step,
    remove_markers,
    remove_markers_step,
    write_markers_step,
)

from .facts import DiskFact, GuestSide, HostSide, PairFacts
from .gather_parts import (
    ACTIVE_STATES,
    DiskPlan,
    Endpoint,
    HostProbe,
    marker_verdict,
    plan_disk,
    reachability,
    run_probe,
    same_content,
    unknown_guest,
)
from .options import MigrationOptions

if TYPE_CHECKING:
    from hosts.models import Host

log = logging.getLogger(__name__)

# Threads probing at once. Most probes wait on a remote host; each host's SSH also caps its
# own channels (gather_parts.SSH_CHANNELS_PER_HOST).
POOL_SIZE = 16
MAX_DESTINATIONS = 64  # a fleet is a handful of hosts; more is a caller's mistake, not a plan


def _key(guest_uuid: str) -> str:
    return guest_uuid.strip().lower()


@dataclass(frozen=True)
class FleetFacts:
    """The preflight facts of every guest asked for on one source against every destination.

    ``pairs`` and ``guest_sides`` are keyed by (guest UUID lowercased, destination name);
    ``pair``/``guest_for``/``guest`` take any spelling of the UUID.
    """

    source: str  # source host name
    source_side: HostSide
    guests: tuple[GuestSide, ...]  # as the source describes them, sorted by name (disk facts unchecked)
    destinations: tuple[HostSide, ...]  # in the order asked
    pairs: Mapping[tuple[str, str], PairFacts]
    guest_sides: Mapping[tuple[str, str], GuestSide] = field(repr=False)  # with that destination's disk facts

    def pair(self, guest_uuid: str, destination: str) -> PairFacts:
        """The PairFacts of moving that guest to that destination (KeyError if neither was asked)."""
        return self._lookup(self.pairs, guest_uuid, destination)

    def guest_for(self, guest_uuid: str, destination: str) -> GuestSide:
        """The guest with what ``destination`` proved about its disks: judge it with ``pair(g, d)``."""
        return self._lookup(self.guest_sides, guest_uuid, destination)

    def guest(self, guest_uuid: str) -> GuestSide:
        """The guest as the source describes it (disk facts unchecked)."""
        wanted = _key(guest_uuid)
        for guest in self.guests:
            if _key(guest.uuid) == wanted:
                return guest
        raise KeyError(f"{guest_uuid} was not gathered from {self.source}")

    def _lookup(self, table: Mapping, guest_uuid: str, destination: str):
        try:
            return table[(_key(guest_uuid), destination)]
        except KeyError:
            raise KeyError(f"no facts for guest {guest_uuid} on {destination} (gathered from {self.source})") from None


@dataclass
class _Guest:
    key: str  # UUID lowercased
    asked: str  # the UUID as asked for (an unknown guest keeps it)
    info: lv.DomainInfo | None
    plans: list[DiskPlan]


def _wanted_uuids(guest_uuids: Sequence[str] | None) -> list[str] | None:
    if guest_uuids is None:
        return None
    if isinstance(guest_uuids, str):
        raise TypeError("guest_uuids must be a sequence of UUIDs, not one string")
    wanted, seen = [], set()
    for uuid in guest_uuids:
        if not isinstance(uuid, str):
            raise TypeError(f"a guest UUID must be a string, not {type(uuid).__name__}")
        if _key(uuid) not in seen:
            seen.add(_key(uuid))
            wanted.append(uuid)
    return wanted


def _check_destinations(destinations: Sequence[Endpoint]) -> None:
    if len(destinations) > MAX_DESTINATIONS:
        raise ValueError(f"at most {MAX_DESTINATIONS} destinations at once, not {len(destinations)}")
    names = [d.name for d in destinations]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"destinations named more than once: {', '.join(repeated)}")


def gather_fleet(
    *, source: Endpoint, destinations: Sequence[Endpoint], guest_uuids: Sequence[str] | None,
    options: MigrationOptions,
) -> FleetFacts:
    """Probe the source and every destination once for all the guests; see the module docstring.

    ``guest_uuids`` None means every guest defined on the source (running, paused, shut
    off). ``options`` only decides whether disk sizes and free space are measured (live
    copy-storage). ValueError for destinations named twice.
    """
    destinations = list(destinations)
    _check_destinations(destinations)
    wanted = _wanted_uuids(guest_uuids)
    started = time.monotonic()
    src = HostProbe(source)
    dsts = [HostProbe(d) for d in destinations]
    for endpoint in (source, *destinations):
        # The login details come from the database: read them here, not in the pool's threads.
        endpoint.session.ssh_target  # noqa: B018
    with ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="preflight") as pool:
        for future in [pool.submit(h.open) for h in (src, *dsts)]:
            future.result()
        facts = _Rounds(pool, src, dsts, options).run(_select_guests(src, wanted))
    log.info("preflight facts for %d guests from %s to %d destinations in %.2f s", len(facts.guests),
             source.name, len(destinations), time.monotonic() - started)
    return facts


def _select_guests(src: HostProbe, wanted: list[str] | None) -> list[_Guest]:
    if src.domains is None:  # the source did not answer: only the UUIDs asked for are known
        return [_Guest(_key(u), u, None, []) for u in wanted or ()]
    by_key = {_key(d.uuid): d for d in src.domains}
    if wanted is None:
        wanted = [d.uuid for d in src.domains]
    missing = [u for u in wanted if _key(u) not in by_key]
    if missing:
        raise DomainNotFound(f"{src.name} has no guest with UUID {', '.join(missing)}.")
    return [_Guest(_key(u), u, by_key[_key(u)], [plan_disk(d) for d in by_key[_key(u)].disks]) for u in wanted]


def _cpu_key(xml: str, info: lv.DomainInfo) -> tuple:
    """What a CPU comparison depends on: the guest's ``<cpu>`` as migrated, arch, domain and machine type."""
    try:
        cpu = mg.guest_cpu_xml(xml)[0]
    except ET.ParseError:
        cpu = xml  # compare_guest_cpu will fail on it, for this guest alone
    return (cpu, info.arch, info.domain_type, info.machine)


class _Rounds:
    """The probe rounds of one gather_fleet call (see the module docstring)."""

    def __init__(self, pool: ThreadPoolExecutor, src: HostProbe, dsts: list[HostProbe], options: MigrationOptions):
        self.pool, self.src, self.dsts = pool, src, dsts
        self.copying = options.copy_storage and options.live
        self.token = secrets.token_hex(16)

    def submit(self, what: str, fn: Callable, *args, **kwargs) -> Future:
        return self.pool.submit(run_probe, what, fn, *args, **kwargs)

    @staticmethod
    def done(future: Future | None):
        return future.result() if future is not None else None

    def _room_flag(self, plan: DiskPlan) -> bool:
        return self.copying and plan.copy_candidate

    def _disk_key(self, plan: DiskPlan, destination: str) -> tuple:
        return (plan.path, plan.writable, self._room_flag(plan), destination)

    # Each remote command costs the host a start of the account's shell, which dominates on a busy
    # host: several disks on one destination go in one command (one alone keeps the plain probe).

    def _queries(self, known: list[_Guest], destination: str, markers: Mapping) -> dict[tuple, DiskQuery]:
        """Each distinct disk path of the guests, as ``destination`` is asked about it."""
        asked: dict[tuple, DiskQuery] = {}
        for g in known:
            for p in g.plans:
                if p.path:
                    asked.setdefault(self._disk_key(p, destination), DiskQuery(
                        path=p.path, marker=markers.get(p.directory) if p.directory else None,
                        writable=p.writable, room=self._room_flag(p)))
        return asked

    def _destination_round(self, dst: HostProbe, queries: dict[tuple, DiskQuery], identity,
                           digest_paths: list[str]) -> tuple[dict, dict]:
        """Round 3 on a destination in one exec: every disk path probed, every read-only file digested.

        Returns ({disk key: DiskProbe or None}, {path: digest or None}). The digests are taken
        here, whether or not the markers prove the same file, so no fourth exec is needed.
        """
        keys = list(queries)
        steps = ([probe_disks_step(list(queries.values()), identity=identity)] if keys else []) + (
            [content_digests_step(digest_paths)] if digest_paths else [])
        if not steps:
            return {}, {}
        values = iter(run_steps(dst.ssh, steps))
        found = _answer("disks on destination", next(values)) if keys else None
        digests = _answer("disk content on destination", next(values)) if digest_paths else None
        return dict(zip(keys, found or [None] * len(keys), strict=True)), digests or {}

    def run(self, guests: list[_Guest]) -> FleetFacts:
        src, dsts, submit, done = self.src, self.dsts, self.submit, self.done
        known = [g for g in guests if g.info is not None]
        any_dst_conn = any(d.conn is not None for d in dsts)
        with_ssh = [d for d in dsts if d.ssh is not None] if src.ssh is not None else []

        # --- round 2: what needs only the connections and round 1's facts
        f_xml = {g.key: submit("guest xml", mg.domain_xml, src.conn, g.info.uuid, migratable=True)
                 for g in known if src.conn is not None and any_dst_conn}
        f_operation = {
            g.key: submit("guest jobs", mg.current_operation, src.conn, g.info.uuid,
                          disk_targets=[p.info.target for p in g.plans if p.info.source])
            for g in known if g.info.state in ACTIVE_STATES
        }
        f_sizes = {
            (g.key, p.info.target): submit("disk size", mg.block_size, src.conn, g.info.uuid, p.info.target)
            for g in known if self.copying for p in g.plans if p.copy_candidate and p.path
        }
        # One exec per host for this round (each exec costs the host a start of the account's
        # shell): the source resolves every destination's name and writes the markers; each
        # destination resolves the source, reads its qemu.conf and starts its listener.
        wanted_names = list(dict.fromkeys(d.facts.hostname for d in dsts if d.facts is not None))
        directories = sorted({p.directory for g in known for p in g.plans if p.directory}) if with_ssh else []
        f_src_round = (submit("source round", _source_round, src.ssh, wanted_names, directories, self.token)
                       if src.ssh is not None and (wanted_names or directories) else None)
        src_hostname = src.facts.hostname if src.facts is not None else None
        f_dst_round = {
            d.name: submit("destination round", _destination_round, d.ssh, src_hostname,
                           listener=d in with_ssh, ipv6=":" in d.endpoint.migration_host)
            for d in dsts if d.ssh is not None
        }
        markers: dict[str, str | None] = {}
        placed: list[str] = []
        try:
            # --- round 3, one exec per host, each as soon as what it needs has come: every
            # destination probes each disk path and digests each read-only file (once its round 2
            # and the markers are in); the source connects to every listener side by side (once
            # every destination said where it listens); each distinct guest CPU is compared on
            # each destination (libvirt)
            cpu_keys: dict[str, tuple] = {}
            f_compare: dict[tuple, Future] = {}
            for g in known:
                xml = done(f_xml.get(g.key))
                if xml is None:
                    continue
                cpu_keys[g.key] = key = _cpu_key(xml, g.info)
                for d in dsts:
                    if d.conn is not None and (key, d.name) not in f_compare:
                        f_compare[(key, d.name)] = submit(
                            "cpu compare", mg.compare_guest_cpu, d.conn, guest_xml=xml, arch=g.info.arch,
                            domain_type=g.info.domain_type, machine=g.info.machine)
            by_name = {d.name: d for d in dsts}
            round_of = {f: name for name, f in f_dst_round.items()}
            readonly_paths = list(dict.fromkeys(p.path for g in known for p in g.plans
                                                if p.path and p.is_file and p.info.readonly))
            f_connects: Future | None = None
            f_round3: dict[str, Future] = {}
            answers: dict[str, _DestinationAnswers] = {}
            markers_in = False
            pending = set(round_of) | ({f_src_round} if f_src_round is not None else set())
            while True:
                for f in [f for f in round_of if f.done() and round_of[f] not in answers]:
                    answers[round_of[f]] = f.result() or _DestinationAnswers()
                if not markers_in and (f_src_round is None or f_src_round.done()):
                    src_answers = done(f_src_round) or ({}, {})
                    markers = {dr: src_answers[1].get(dr) for dr in directories}
                    placed = [m for m in markers.values() if m]
                    markers_in = True
                if markers_in:
                    for name, answer in answers.items():
                        if name not in f_round3:
                            f_round3[name] = submit("destination round", self._destination_round, by_name[name],
                                                    self._queries(known, name, markers), answer.identity,
                                                    readonly_paths)
                if f_connects is None and len(answers) == len(round_of) and with_ssh:
                    # No listener: at least learn whether the address answers, on the SSH port.
                    targets = [(d.name, d.endpoint.migration_host,
                                answers[d.name].port if answers[d.name].port is not None else d.endpoint.ssh_port)
                               for d in with_ssh]
                    f_connects = submit("connect from source", _connects, src.ssh, targets)
                if not pending:
                    break
                _finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            identity = {name: a.identity for name, a in answers.items()}
            port = {d.name: answers[d.name].port if d.name in answers else None for d in with_ssh}
            round3 = {name: done(f) or ({}, {}) for name, f in f_round3.items()}
            disk_probes: dict[tuple, DiskProbe | None] = {k: v for probes_of, _ in round3.values()
                                                          for k, v in probes_of.items()}
            dst_digests = {name: digests for name, (_, digests) in round3.items()}
            connect = done(f_connects) or {}
        except BaseException:
            if placed:
                run_probe("marker cleanup", remove_markers, src.ssh, placed)
            raise

        # --- round 4, one exec on the source: the markers removed; read-only disks that are not
        # shared digested, to compare with the destinations' copies; a port that timed out: does
        # the address answer at all (SSH port)?
        def probe_of(g: _Guest, p: DiskPlan, d: HostProbe) -> DiskProbe | None:
            return disk_probes.get(self._disk_key(p, d.name)) if p.path else None

        same_file = {
            (g.key, p.info.target, d.name): marker_verdict(
                p, markers.get(p.directory) if p.directory else None, probe_of(g, p, d), self.token)
            for g in known for p in g.plans for d in dsts
        }
        src_paths: list[str] = []
        compared: list[tuple[tuple, str, str]] = []  # (same_file key, path, destination)
        for g in known:
            for p in g.plans:
                for d in dsts:
                    if (p.info.readonly and p.is_file and same_file[(g.key, p.info.target, d.name)] is not True
                            and (probe_of(g, p, d) or probes.NO_PROBE).exists):
                        if p.path not in src_paths:
                            src_paths.append(p.path)
                        compared.append(((g.key, p.info.target, d.name), p.path, d.name))
        fallbacks = [(d.name, d.endpoint.migration_host, d.endpoint.ssh_port)
                     for d in with_ssh if port[d.name] is not None and connect.get(d.name) == "timeout"]
        src_digests, fallback = (run_probe("source round 4", _source_round4, src.ssh, placed, src_paths, fallbacks)
                                 if src.ssh is not None and (placed or src_paths or fallbacks) else None) or ({}, {})
        for key, path, name in compared:
            same_file[key] = same_content(src_digests.get(path), dst_digests.get(name, {}).get(path))

        # --- assemble
        res_src = (done(f_src_round) or ({}, {}))[0] or {}
        source_side = src.side()
        sides = {d.name: d.side() for d in dsts}
        base: dict[str, GuestSide] = {}
        pairs: dict[tuple[str, str], PairFacts] = {}
        guest_sides: dict[tuple[str, str], GuestSide] = {}
        sizes = {k: done(f) for k, f in f_sizes.items()}
        for g in guests:
            base[g.key] = self._guest_side(g, done(f_operation.get(g.key)), sizes)
            for d in dsts:
                side = guest_sides[(g.key, d.name)] = self._for_destination(
                    g, base[g.key], d, identity.get(d.name), same_file, probe_of)
                names = {x.name for x in d.domains or ()}
                uuids = {_key(x.uuid) for x in d.domains or ()}
                address_ok, ports_ok = reachability(port.get(d.name), connect.get(d.name), fallback.get(d.name))
                compare = f_compare.get((cpu_keys[g.key], d.name)) if g.key in cpu_keys else None
                pairs[(g.key, d.name)] = PairFacts(
                    source=source_side,
                    destination=sides[d.name],
                    source_resolves_destination=res_src.get(d.facts.hostname) if d.facts is not None else None,
                    destination_resolves_source=answers[d.name].resolved if d.name in answers else None,
                    migration_address_reachable=address_ok,
                    ports_reachable=ports_ok,
                    destination_has_domain_name=bool(g.info and d.domains is not None and g.info.name in names),
                    destination_has_domain_uuid=bool(g.info and d.domains is not None and g.key in uuids),
                    cpu_compare=done(compare) or "unknown",
                    destination_pool_room_kib=self._room(g, side, d, disk_probes, probe_of),
                    destination_pool_targets=d.pool_targets,
                )
        return FleetFacts(
            source=src.name,
            source_side=source_side,
            guests=tuple(sorted(base.values(), key=lambda s: (s.name, s.uuid))),
            destinations=tuple(sides[d.name] for d in dsts),
            pairs=pairs,
            guest_sides=guest_sides,
        )

    @staticmethod
    def _guest_side(g: _Guest, operation: str | None, sizes: Mapping) -> GuestSide:
        info = g.info
        if info is None:
            return unknown_guest(g.asked)
        disks = []
        for p in g.plans:
            size = sizes.get((g.key, p.info.target))
            disks.append(DiskFact(
                target=p.info.target, source=p.info.source, readonly=p.info.readonly,
                shareable=p.info.shareable, network=p.network, same_file_on_destination=None,
                destination_can_open=None, perm_detail="",
                size_kib=size.allocation // 1024 if size is not None else None,
            ))
        return GuestSide(
            name=info.name, uuid=info.uuid, state=info.state, arch=info.arch, domain_type=info.domain_type,
            machine=info.machine, vcpus=info.vcpus, memory_kib=info.memory_kib, cpu_mode=info.cpu_mode,
            cpu_model=info.cpu_model, disks=tuple(disks), active_operation=operation, persistent=info.persistent,
        )

    @staticmethod
    def _for_destination(g: _Guest, base: GuestSide, d: HostProbe, identity, same_file: Mapping,
                         probe_of: Callable) -> GuestSide:
        disks = []
        for p, fact in zip(g.plans, base.disks, strict=True):
            probe = probe_of(g, p, d)
            opened, perm = None, ""
            if probe is not None:
                opened, perm = can_open(probe, writable=p.writable, identity=identity) if identity \
                    else (None, probe.perm)
            disks.append(replace(fact, same_file_on_destination=same_file[(g.key, p.info.target, d.name)],
                                 destination_can_open=opened, perm_detail=perm))
        return replace(base, disks=tuple(disks))

    def _room(self, g: _Guest, side: GuestSide, d: HostProbe, disk_probes: Mapping, probe_of: Callable) -> int | None:
        if not self.copying:
            return None
        rooms = [
            (probe_of(g, p, d) or probes.NO_PROBE).room_kib
            for p, fact in zip(g.plans, side.disks, strict=True)
            if p.copy_candidate and fact.same_file_on_destination is not True
        ]
        # Several directories: the smallest free space (the check compares it with the sum of all copies).
        return min(rooms) if rooms and all(r is not None for r in rooms) else None


@dataclass(frozen=True)
class _DestinationAnswers:
    """What a destination said in round 2 (None where it could not say)."""

    resolved: list[str] | None = None  # how it resolves the source's hostname
    identity: probes.QemuIdentity | None = None
    port: int | None = None  # its one-shot listener's port


def _answer(what: str, value):
    """A batched step's value, or None ("could not verify") when it raised."""
    if isinstance(value, AdapterError):
        log.info("preflight probe %s failed: %s", what, value)
        return None
    return value


def _source_round(ssh, names: list[str], directories: list[str], token: str):
    """Round 2 on the source in one exec: ({name: addresses} or None, {directory: marker path or None})."""
    steps = ([resolve_names_step(names)] if names else []) + (
        [write_markers_step(directories, token)] if directories else [])
    values = iter(run_steps(ssh, steps))
    resolved = _answer("source resolves destinations", next(values)) if names else None
    made = _answer("markers", next(values)) if directories else None
    return resolved, made or dict.fromkeys(directories)


def _destination_round(ssh, source_hostname: str | None, *, listener: bool, ipv6: bool) -> _DestinationAnswers:
    """Round 2 on a destination in one exec: resolve the source, read qemu.conf, start the listener."""
    steps = [qemu_identity_step()] + ([listener_step(ssh.target.address)] if listener else []) + (
        [resolve_names_step([source_hostname])] if source_hostname else [])
    values = iter(run_steps(ssh, steps))
    identity = _answer("qemu user", next(values))
    port = _answer("listener", next(values)) if listener else None
    resolved = _answer("destination resolves source", next(values)) if source_hostname else None
    if port == probes.NO_PYTHON:
        port = run_probe("listener (socat)", probes.socat_listener, ssh, ipv6=ipv6)
    return _DestinationAnswers(resolved=resolved[source_hostname] if resolved else None, identity=identity, port=port)


def _connects(ssh, targets: list[tuple[str, str, int]]) -> dict[str, str | None]:
    """From the source, one connection attempt to each (destination, address, port), side by side, in one exec."""
    found = run_step(ssh, connects_step([(address, port) for _name, address, port in targets]))
    return {name: answer for (name, _a, _p), answer in zip(targets, found, strict=True)}


def _source_round4(ssh, markers: list[str], paths: list[str], fallbacks: list[tuple[str, str, int]]):
    """Round 4 on the source in one exec: (digests {path: …}, fallback connects {destination: …})."""
    steps = ([remove_markers_step(markers)] if markers else []) + (
        [content_digests_step(paths)] if paths else []) + (
        [connects_step([(address, port) for _n, address, port in fallbacks])] if fallbacks else [])
    values = iter(run_steps(ssh, steps))
    if markers:
        _answer("marker cleanup", next(values))
    digests = (_answer("disk content on source", next(values)) or {}) if paths else {}
    answers = (_answer("connect to migration address", next(values)) or [None] * len(fallbacks)) if fallbacks else []
    return digests, {name: answer for (name, _a, _p), answer in zip(fallbacks, answers, strict=True)}


def gather_evacuation(
    *, source: Host, destinations: Sequence[Host], guest_uuids: Sequence[str] | None = None,
    options: MigrationOptions,
) -> FleetFacts:
    """Facts for the preflight of moving guests of ``source`` to any of ``destinations`` (inventory hosts).

    Opens one session per host (the source once, each destination once) for the length of
    the probes and closes them all; the facts are kept for the runners (services.facts). ``guest_uuids`` None = every guest defined on the source.
    ValueError when a destination is the source or is named twice; adapter errors that are
    not a host failing to answer propagate (DomainNotFound for a guest the source lacks).
    """
    from hosts import access  # needs Django; gather_fleet() itself does not (bench/ runs it without)

    destinations = list(destinations)
    if any(d.name == source.name for d in destinations):
        raise ValueError(f"{source.name} cannot be a destination of its own evacuation")
    with ExitStack() as stack:
        src = stack.enter_context(access.open_session(source))
        dsts = [stack.enter_context(access.open_session(d)) for d in destinations]
        fleet = gather_fleet(
            source=_endpoint(source, src),
            destinations=[_endpoint(d, s) for d, s in zip(destinations, dsts, strict=True)],
            guest_uuids=guest_uuids,
            options=options,
        )
    # Kept for the runners of the migrations that follow (an evacuation confirmed within a minute).
    _remember(fleet, source, destinations, copying=bool(options.copy_storage and options.live))
    return fleet


def _remember(fleet: FleetFacts, source: Host, destinations: Sequence[Host], *, copying: bool,
              fresh_until=None) -> None:
    from .services.facts import preflight_facts_remember

    for d in destinations:
        preflight_facts_remember(
            source=source, destination=d, copy_storage=copying, fresh_until=fresh_until,
            found=[(fleet.pair(g.uuid, d.name), fleet.guest_for(g.uuid, d.name)) for g in fleet.guests],
        )


# --- A run of moves: many sources ---------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """One guest to move in a run: from its host now to its destination; ``copying``: live copy-storage."""

    guest_uuid: str
    source: Host
    destination: Host
    copying: bool = False


@dataclass(frozen=True)
class MoveGroup:
    """The moves one gather serves: one source against its destinations, for these guests."""

    source: Host
    destinations: tuple[Host, ...]
    guest_uuids: tuple[str, ...]
    copying: bool


def moves_by_source(moves: Sequence[Move]) -> list[MoveGroup]:
    """One gather per (source, copy-storage or not), destinations and guests in the order first named (pure).

    A source that is also a destination of the same group is left out of that group's
    destinations (a host is never its own destination).
    """
    groups: dict[tuple[int, bool], tuple[Host, dict[int, Host], dict[str, None]]] = {}
    for m in moves:
        source, dests, guests = groups.setdefault((m.source.pk, m.copying), (m.source, {}, {}))
        if m.destination.pk != source.pk:
            dests.setdefault(m.destination.pk, m.destination)
            guests.setdefault(_key(m.guest_uuid), None)
    return [MoveGroup(source=src, destinations=tuple(dests.values()), guest_uuids=tuple(guests), copying=copying)
            for (_pk, copying), (src, dests, guests) in groups.items() if dests]


def gather_moves(
    *, moves: Sequence[Move], fresh_until, on_kept: Callable[[MoveGroup], None] | None = None,
) -> dict[str, str]:
    """Gather once for a whole run of moves and keep the facts for its items until ``fresh_until``.

    One gather per source (``moves_by_source``: per host once, per host pair once), the
    sources side by side, each on sessions of its own. Each source's facts are kept as soon
    as its gather ends, in the calling thread, which then calls ``on_kept(group)`` (so the
    moves from that source may start while other sources are still asked). Returns {source
    name: why its gather failed} for sources whose facts could not be gathered (their items
    then check in full). A guest gone from its source meanwhile does not spoil the others:
    that source is gathered again for all its guests.
    """
    from hosts import access  # needs Django; gather_fleet() itself does not

    groups = moves_by_source(moves)
    if not groups:
        return {}
    problems: dict[str, str] = {}
    wanted = {_key(m.guest_uuid) for m in moves}
    with ExitStack() as stack:
        work = []
        for group in groups:
            src = _endpoint(group.source, stack.enter_context(access.open_session(group.source)))
            dsts = [_endpoint(d, stack.enter_context(access.open_session(d))) for d in group.destinations]
            for endpoint in (src, *dsts):
                endpoint.session.ssh_target  # noqa: B018 - read from the database here, not in the pool
            work.append((group, src, dsts))

        def one(group: MoveGroup, src: Endpoint, dsts: list[Endpoint]) -> FleetFacts:
            options = MigrationOptions(copy_storage=group.copying)
            try:
                return gather_fleet(source=src, destinations=dsts, guest_uuids=list(group.guest_uuids),
                                    options=options)
            except DomainNotFound:  # one guest left meanwhile: the others still move
                return gather_fleet(source=src, destinations=dsts, guest_uuids=None, options=options)

        with ThreadPoolExecutor(max_workers=min(len(work), 4), thread_name_prefix="run-facts") as pool:
            futures = {pool.submit(one, group, src, dsts): group for group, src, dsts in work}
            for future in as_completed(futures):
                group = futures[future]
                try:
                    fleet = future.result()
                except (AdapterError, ValueError) as exc:
                    problems[group.source.name] = getattr(exc, "message", None) or str(exc)
                    continue
                kept = replace(fleet, guests=tuple(g for g in fleet.guests if _key(g.uuid) in wanted))
                _remember(kept, group.source, group.destinations, copying=group.copying, fresh_until=fresh_until)
                if on_kept is not None:
                    on_kept(group)
    return problems


def _endpoint(host: Host, session) -> Endpoint:
    return Endpoint(name=host.name, session=session, in_maintenance=host.in_maintenance)
