"""Cold migration on the hosts: check, copy with progress, verify, move the definition, start.

The order keeps the guest whole at every step: the original disks are only read until the
copies are verified (SHA-256 on both sides) and the guest is defined at its destination;
only then is it undefined at the source, started, and the originals removed. Any failure
runs the undo list backwards (guest defined again at the source with its original XML,
copies removed) and the record says where the guest is, as the hosts report it.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from django.conf import settings

from core.choices import JobLogLevelChoices
from core.errors import PortalError
from core.jobs import JobContext
from hosts import access
from hosts.adapters import direct_copy, images, probes
from hosts.adapters import libvirt as lv
from hosts.adapters.errors import AdapterError, DomainNotFound, HostUnreachable
from hosts.adapters.ssh import SSHSession
from hosts.models import Host

from . import cold, policy, whereabouts
from .choices import ColdMigrationStatusChoices as C, MigrationAuditActionChoices as A
from .heartbeat import probe_guest
from .models import ColdMigration
from .services import cold as cold_services
from .verdicts import VerdictStatus

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5
START_WAIT_S = 30.0
BOOT_HEARTBEAT_WAIT_S = 30.0  # a Linux guest's first beat comes a few seconds after "running"
NVRAM_MODE = "0600"
DIRECT_KEY_MARGIN_S = 300  # a one-time copy key outlives the copies' own timeouts by this much
VIA_DIRECT = "direct"  # files[].via: cold.ROUTE_ON_HOST, cold.ROUTE_RELAY or this
VIA_WORDS = {VIA_DIRECT: "host to host", cold.ROUTE_RELAY: "relayed through the portal", cold.ROUTE_ON_HOST: "on the host"}
IMAGE_MODE = "0600"

StepCallback = Callable[[ColdMigration, str], None]
# (record, bytes copied so far, bytes to copy) while the disks are copied, at most every PROGRESS_EVERY_S.
ProgressCallback = Callable[[ColdMigration, int, int], None]


class ColdFailed(PortalError):
    """The move cannot go on; ``message`` says why, ``hint`` what to do. ``checked``: nothing was changed yet."""

    def __init__(self, message: str, *, hint: str = "", checked: bool = False):
        super().__init__(message, hint=hint)
        self.checked = checked


class ColdNotCompleted(PortalError):
    """The move failed and was recorded (and undone); raised to fail the Job as well."""


@dataclass
class _Side:
    host: Host
    conn: object
    ssh: SSHSession
    identity: probes.QemuIdentity | None = None

    @property
    def runas(self) -> list[str]:
        return self.identity.runas_argv() if self.identity else []


@dataclass
class _Undo:
    """What has been done so far, to be undone backwards on failure."""

    created: list[tuple[_Side, str, list[str]]] = field(default_factory=list)  # (writer, path, runas)
    defined_at_destination: bool = False
    maybe_defined_at_destination: bool = False  # the define call lost its connection: unknown
    redefined_in_place: bool = False
    undefined_at_source: bool = False
    started: bool = False


def _log(ctx: JobContext | None, message: str, *, level=JobLogLevelChoices.INFO) -> None:
    if ctx is not None:
        ctx.log(message, level=level)
    logger.info("cold migration: %s", message)


def run_cold_migration(
    *, cold_id: int, ctx: JobContext | None, on_step: StepCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict:
    """Run one cold migration to its end; returns a summary.

    ``on_step(cold, step)`` is told each step, ``on_progress(cold, done, total)`` the copy's bytes.
    """
    record = ColdMigration.objects.select_related("source", "destination", "share", "job").get(pk=cold_id)
    if not cold_services.cold_begin(cold=record, job=ctx.job if ctx else None):
        record.refresh_from_db()
        _log(ctx, f"Cold migration #{record.pk} is {record.status}, not queued: not running it again",
             level=JobLogLevelChoices.WARNING)
        return {"status": record.status}
    return _Run(record, ctx, on_step, on_progress).run()


class _Run:
    def __init__(self, record: ColdMigration, ctx: JobContext | None, on_step: StepCallback | None = None,
                 on_progress: ProgressCallback | None = None):
        self.cold = record
        self.ctx = ctx
        self.on_step = on_step
        self.on_progress = on_progress
        self.undo = _Undo()
        self.stack = ExitStack()
        self.src: _Side | None = None
        self.dst: _Side | None = None
        self.moves: list[cold.FileMove] = []
        self.sizes: dict[str, int] = {}
        self.verify_seconds: float | None = None
        self.direct: direct_copy.DirectRoute | None = None
        self.direct_index: dict[str, int] = {}
        self.since_start: float | None = None

    # ------------------------------------------------------------------ helpers
    def step(self, name: str, **kwargs) -> None:
        cold_services.cold_step(cold=self.cold, **kwargs)
        if self.on_step is not None:
            self.on_step(self.cold, name)

    def log(self, message: str, level=JobLogLevelChoices.INFO) -> None:
        _log(self.ctx, message, level=level)

    def _open(self, host: Host) -> _Side:
        try:
            session = self.stack.enter_context(access.open_session(host))
            conn, ssh = session.libvirt, session.ssh
        except AdapterError as exc:
            raise ColdFailed(f"{host.name} did not answer: {exc.message}", hint=exc.hint or "", checked=True) from exc
        side = _Side(host=host, conn=conn, ssh=ssh)
        try:
            side.identity = probes.qemu_identity(ssh)
        except AdapterError as exc:
            self.log(f"Could not read QEMU's user on {host.name} ({exc.message}); copying as root",
                     JobLogLevelChoices.WARNING)
        return side

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        c = self.cold
        uuid = str(c.vm_uuid)
        with self.stack:
            try:
                self.src = self._open(c.source)
                self.dst = self.src if c.same_host else self._open(c.destination)
                self.check(uuid)
                self.copy()
                self.define(uuid)
                if c.start:
                    self.start(uuid)
                return self.finish(uuid)
            except Exception as exc:  # every failure is undone and recorded, whatever raised it
                return self.fail(uuid, exc)

    def placement(self) -> cold.Placement:
        c = self.cold
        if c.share is not None:
            dest_dir = c.share.path_seen_by(c.destination)
            src_view = c.share.path_seen_by(c.source)
            return cold.Placement(destination_dir=dest_dir, source_view_dir=src_view, label=f"share {c.share}")
        return cold.Placement(destination_dir=None, source_view_dir=None,
                              label=f"{c.destination.name}'s local storage")

    def check(self, uuid: str) -> None:
        c, src, dst = self.cold, self.src, self.dst
        self.log(f"Checking {c.vm_name} on {c.source.name}" + ("" if c.same_host else f" and {c.destination.name}"))
        try:
            info = lv.get_domain(src.conn, uuid)
            original = lv.inactive_xml(src.conn, uuid)
            saved = lv.saved_state(src.conn, uuid)
        except DomainNotFound as exc:
            raise ColdFailed(f"{c.vm_name} is not defined on {c.source.name} any more.",
                             hint="Refresh the inventory to see where it is.", checked=True) from exc
        placement = self.placement()
        parsed = lv.parse_domain_xml(original)
        self.moves = cold.plan_moves(disks=parsed.disks, nvram=cold.nvram_path(original), placement=placement,
                                     same_host=c.same_host)
        images_seen: dict[str, tuple[str, str | None] | None] = {}
        existing = []
        for move in self.moves:
            if not move.copied:
                continue
            try:
                if move.kind == "disk":
                    facts = images.image_facts(src.ssh, move.source_path)
                    images_seen[move.source_path] = (facts.format, facts.backing)
                stat = images.file_facts(src.ssh, move.source_path)
                if stat is None:
                    images_seen[move.source_path] = None
                else:
                    self.sizes[move.source_path] = stat.size
            except AdapterError as exc:
                self.log(f"Could not read {move.source_path}: {exc.message}", JobLogLevelChoices.WARNING)
                images_seen[move.source_path] = None
            writer = self._writer(move)
            if images.path_exists(writer.ssh, move.write_path):
                existing.append(move.destination_path)
        placement_ok, problem, free = True, "", None
        copied = [m for m in self.moves if m.copied and m.kind == "disk"]
        if copied:
            writer = self._writer(copied[0])
            directory = posixpath.dirname(copied[0].write_path)
            if not images.path_exists(writer.ssh, directory):
                placement_ok, problem = False, f"{directory} does not exist on {writer.host.name}."
            else:
                free = images.free_bytes(writer.ssh, directory)
        if c.share is not None and placement.destination_dir is None:
            placement_ok, problem = False, f"{c.destination.name} does not mount the share {c.share}."
        missing_boot = [p for p in cold.boot_files(original) if not images.path_exists(dst.ssh, p)]
        missing_networks = self._missing_networks(parsed)
        other_domains = [] if c.same_host else lv.list_domains(dst.conn)
        facts = cold.ColdFacts(
            guest_name=c.vm_name, guest_state=info.state, persistent=info.persistent,
            has_managed_save=saved.managed_save, snapshot_count=saved.snapshots, same_host=c.same_host,
            destination_name=c.destination.name, source_name=c.source.name,
            destination_has_uuid=any(d.uuid == uuid for d in other_domains),
            destination_has_name=any(d.name == c.vm_name for d in other_domains),
            disks=parsed.disks, moves=self.moves, images=images_seen, sizes=self.sizes,
            existing_destinations=existing, free_bytes=free, placement_ok=placement_ok,
            placement_problem=problem, missing_boot_files=missing_boot, missing_networks=missing_networks,
            placement_label=placement.label,
        )
        found = cold.verdicts(facts)
        for v in found:
            level = JobLogLevelChoices.INFO if v.status == VerdictStatus.PASS else JobLogLevelChoices.WARNING
            self.log(f"Check {v.check}: {v.status} — {v.reason}", level)
        total = sum(self.sizes.get(m.source_path, 0) for m in self.moves if m.copied)
        files = [{**m.to_json(), "size": self.sizes.get(m.source_path)} for m in self.moves]
        self.step("checked", verdicts=[{"check": v.check, "status": v.status, "reason": v.reason, "fix": v.fix}
                                     for v in found], files=files, bytes_total=total,
                  original_xml=original)
        failing = cold.blocking(found)
        if failing:
            raise ColdFailed(" ".join(v.reason for v in failing), hint=" ".join(v.fix for v in failing if v.fix),
                             checked=True)

    def _missing_networks(self, parsed: lv.DomainInfo) -> list[str]:
        dst = self.dst
        wanted_networks = {n.source for n in parsed.nics if n.type == "network" and n.source}
        wanted_bridges = {n.source for n in parsed.nics if n.type == "bridge" and n.source}
        missing = sorted(wanted_networks - lv.network_names(dst.conn)) if wanted_networks else []
        for bridge in sorted(wanted_bridges):
            if not images.path_exists(dst.ssh, f"/sys/class/net/{bridge}/bridge"):
                missing.append(bridge)
        return missing

    def _writer(self, move: cold.FileMove) -> _Side:
        return self.src if move.route == cold.ROUTE_ON_HOST else self.dst

    def _writer_runas(self, writer: _Side, directory: str) -> list[str]:
        """Write as QEMU's user where it may (a root_squash share), else as root."""
        runas = writer.runas
        if runas and images.can_write_dir(writer.ssh, directory, runas):
            return runas
        return []

    # ------------------------------------------------------------------ copy
    def copy(self) -> None:
        c = self.cold
        to_copy = [m for m in self.moves if m.copied]
        if not to_copy:
            self.log("Nothing to copy: the disks are already on the chosen storage")
            return
        self.step("copying", status=C.COPYING, phase=f"Copying {len(to_copy)} file(s)")
        runas = {m.write_path: self._writer_runas(self._writer(m), posixpath.dirname(m.write_path)) for m in to_copy}
        relayed = [m for m in to_copy if m.route == cold.ROUTE_RELAY]
        if relayed:
            self._open_direct(relayed, runas)
        try:
            self._copy_all(to_copy, runas)
        finally:
            self._close_direct()
        if self.ctx is not None:
            self.ctx.progress(90)

    def _copy_all(self, to_copy: list[cold.FileMove], runas: dict[str, list[str]]) -> None:
        copy_seconds = verify_seconds = 0.0
        done_before = 0
        files = list(self.cold.files)
        for index, move in enumerate(to_copy, 1):
            writer = self._writer(move)
            as_user = runas[move.write_path]
            size = self.sizes.get(move.source_path, 0)
            self.log(f"Copying {move.target} {move.source_path} → {writer.host.name}:{move.write_path} "
                     f"({size / 2**20:.1f} MiB, {self._how(move)}{', as ' + as_user[2] if len(as_user) > 2 else ''})")
            self.step("copy-file", phase=f"Copying {move.target} ({index}/{len(to_copy)})")
            self.undo.created.append((writer, move.write_path, as_user))
            progress = self._progress_reporter(done_before)
            try:
                result, via = self._copy_one(move, writer, as_user, progress, timeout=self._copy_timeout(size))
            except images.CopyFailed as exc:
                if exc.target_existed:
                    self.undo.created.pop()  # not ours: never remove it
                raise
            done_before += result.bytes
            copy_seconds += result.seconds
            progress(0)
            self.log(f"Copied {result.bytes / 2**20:.1f} MiB in {result.seconds:.2f} s "
                     f"({_shown_rate(result.bytes, result.seconds)} MiB/s, {VIA_WORDS[via]}); verifying")
            verify_started = time.monotonic()
            source_sum = images.sha256(self.src.ssh, move.source_path, timeout=self._copy_timeout(size))
            copy_sum = images.sha256(writer.ssh, move.write_path, runas=as_user, timeout=self._copy_timeout(size))
            verify_seconds += time.monotonic() - verify_started
            if source_sum != copy_sum:
                raise ColdFailed(f"The copy of {move.source_path} does not match it (SHA-256 {copy_sum[:12]}… "
                                 f"vs {source_sum[:12]}…).",
                                 hint="The storage or the network corrupted data: check it before retrying.")
            perm = self._ensure_qemu_can_open(move)
            for entry in files:
                if entry["target"] == move.target and entry["kind"] == move.kind:
                    entry.update(sha256=source_sum, verified=True, copied_bytes=result.bytes, perm=perm, via=via,
                                 mib_per_s=_shown_rate(result.bytes, result.seconds))
            self.log(f"{move.target}: SHA-256 {source_sum[:16]}… matches on both sides")
        self.verify_seconds = verify_seconds
        self.step("copied", reached="copied", files=files, bytes_done=done_before, copy_seconds=copy_seconds)

    def _how(self, move: cold.FileMove) -> str:
        if move.route == cold.ROUTE_ON_HOST:
            return f"on {self._writer(move).host.name}"
        if self.direct is not None:
            return f"streamed from {self.cold.source.name} to {self.cold.destination.name} with a one-time key"
        return "relayed through the portal"

    def _copy_one(self, move: cold.FileMove, writer: _Side, runas: list[str], progress: Callable[[int], None], *,
                  timeout: float) -> tuple[images.CopyResult, str]:
        """One file by its route; a direct copy that cannot start (nothing written) falls back to the relay."""
        if move.route == cold.ROUTE_ON_HOST:
            return images.copy_on_host(writer.ssh, move.source_path, move.write_path, runas=runas,
                                       on_bytes=progress, timeout=timeout), cold.ROUTE_ON_HOST
        if self.direct is not None:
            try:
                return self.direct.copy(self.direct_index[move.write_path], move.source_path, on_bytes=progress,
                                        timeout=timeout), VIA_DIRECT
            except direct_copy.DirectUnavailable as exc:
                self.log(f"{exc.message}. Relaying through the portal instead.", JobLogLevelChoices.WARNING)
                self._close_direct()
        return images.copy_between_hosts(self.src.ssh, move.source_path, writer.ssh, move.write_path, runas=runas,
                                         on_bytes=progress, timeout=timeout), cold.ROUTE_RELAY

    def _open_direct(self, moves: list[cold.FileMove], runas: dict[str, list[str]]) -> None:
        """A one-time key for streaming ``moves`` from the source's ssh to the destination's sshd, if it can be had."""
        c = self.cold
        if not settings.VMPORTAL_COLD_COPY_DIRECT:
            self.log("Relaying the copies through the portal (VMPORTAL_COLD_COPY_DIRECT=0)")
            return
        d = c.destination
        lifetime = DIRECT_KEY_MARGIN_S + sum(self._copy_timeout(self.sizes.get(m.source_path, 0)) for m in moves)
        route = direct_copy.DirectRoute(
            self.src.ssh, self.dst.ssh,
            endpoint=direct_copy.Endpoint(address=d.address, port=d.ssh_port, user=d.ssh_user, host_key=d.host_key),
            writes=[(m.write_path, runas[m.write_path]) for m in moves], label=f"cold-{c.pk}",
            lifetime_s=lifetime,
        )
        try:
            grant = route.open(before_authorize=lambda g: cold_services.cold_copy_key_authorizing(
                cold=c, grant=g.to_json()))
        except (AdapterError, ValueError) as exc:
            if c.copy_grant:  # the key's line may have been written: say whether the undo removed it
                cold_services.cold_copy_key_removed(cold=c, problems=route.open_problems)
            reason = exc.message if isinstance(exc, AdapterError) else f"the destination's pinned key: {exc}"
            self.log(f"Cannot stream from {c.source.name} to {d.name} directly ({reason}). "
                     "Relaying through the portal instead (slower).", JobLogLevelChoices.WARNING)
            return
        self.direct = route
        self.direct_index = {path: i for i, (path, _) in enumerate(route.writes)}
        cold_services.cold_copy_key_authorized(cold=c, grant=grant.to_json(), files=[m.write_path for m in moves])
        self.log(f"One-time key {grant.fingerprint} authorized on {d.name} for {len(moves)} file(s), from "
                 f"{grant.from_address} only, until {_shown_expiry(grant.expires)} ({d.name}'s time)")

    def _close_direct(self) -> None:
        route, self.direct = self.direct, None
        if route is None:
            return
        problems = route.close()
        cold_services.cold_copy_key_removed(cold=self.cold, problems=problems)
        for problem in problems:
            self.log(problem, JobLogLevelChoices.ERROR)
        if not problems:
            self.log(f"One-time key removed from {self.cold.destination.name}")

    def _copy_timeout(self, size: int) -> float:
        return 120.0 + 3 * size / policy.COLD_COPY_MIN_BYTES_PER_S

    def _progress_reporter(self, done_before: int) -> Callable[[int], None]:
        last = [0.0]
        total = max(1, self.cold.bytes_total)

        def report(done: int) -> None:
            now = time.monotonic()
            if done and now - last[0] < PROGRESS_EVERY_S:
                return
            last[0] = now
            cold_services.cold_progress(cold=self.cold, bytes_done=done_before + done)
            if self.ctx is not None:
                # The copy is most of the work: 0–90 %, the rest for defining and starting.
                self.ctx.progress(int(90 * (done_before + done) / total))
            if self.on_progress is not None:
                self.on_progress(self.cold, done_before + done, self.cold.bytes_total)

        return report

    def _ensure_qemu_can_open(self, move: cold.FileMove) -> str:
        """The destination's QEMU user must open the copy; give it the right owner and mode if not."""
        dst = self.dst
        stat = images.file_facts(dst.ssh, move.destination_path)
        before = stat.perm if stat else ""
        if not dst.identity:
            return before
        writable = not move.readonly
        if images.can_open(dst.ssh, move.destination_path, dst.runas, writable=writable):
            return before
        identity = dst.identity
        self.log(f"QEMU's user {identity.user} on {dst.host.name} cannot open {move.destination_path} ({before}); "
                 f"setting owner {identity.user}:{identity.group or identity.user} mode {IMAGE_MODE}")
        try:
            after = images.set_owner_mode(dst.ssh, move.destination_path, user=identity.user,
                                          group=identity.group, mode=IMAGE_MODE).perm
        except AdapterError as exc:
            raise ColdFailed(
                f"QEMU's user {identity.user} on {dst.host.name} cannot open {move.destination_path} ({before}), "
                f"and changing its owner failed: {exc.message}",
                hint="On NFS with root_squash only the server can change owners: run "
                     f"`chown {identity.user} FILE; chmod {IMAGE_MODE} FILE` on the NFS server, or export the "
                     "directory owned by QEMU's user (the NFS wizard does).",
            ) from exc
        cold_services.cold_permissions_set(cold=self.cold, host=dst.host, path=move.destination_path,
                                      before=before, after=after)
        if not images.can_open(dst.ssh, move.destination_path, dst.runas, writable=writable):
            raise ColdFailed(f"QEMU's user {identity.user} still cannot open {move.destination_path} ({after}).",
                             hint=f"Check that {identity.user} may enter every directory above it.")
        return after

    # ------------------------------------------------------------------ define
    def define(self, uuid: str) -> None:
        c = self.cold
        # Someone may have started the guest on the source while its disks were copied: then
        # the copies are already stale and must not become the guest's disks.
        state = lv.get_domain(self.src.conn, uuid).state
        if state != "shutoff":
            raise ColdFailed(f"{c.vm_name} was started on {c.source.name} during the copy ({state}); the copies "
                             "are stale.", hint="Shut it down again and start the move again.")
        new_paths = {m.target: m.destination_path for m in self.moves if m.destination_path != m.source_path}
        new_xml = cold.rewrite_sources(c.original_xml, new_paths) if new_paths else c.original_xml
        self.step("defining", status=C.DEFINING, phase=f"Defining {c.vm_name} on {c.destination.name}",
                  new_xml=new_xml)
        if c.same_host:
            self.undo.redefined_in_place = True
            defined = lv.define_domain(self.src.conn, new_xml)
            self.log(f"Redefined {c.vm_name} on {c.source.name} with its disks on the share")
        else:
            try:
                defined = lv.define_domain(self.dst.conn, new_xml)
            except HostUnreachable:
                # The request may or may not have reached libvirtd before the connection went.
                self.undo.maybe_defined_at_destination = True
                raise
            self.undo.defined_at_destination = True
            self.log(f"Defined {c.vm_name} on {c.destination.name}")
        sources = {d.target: d.source for d in defined.disks}
        wrong = [t for t, p in new_paths.items() if t != "nvram" and sources.get(t) != p]
        if defined.uuid != uuid or wrong:
            raise ColdFailed(f"The new definition does not point at the copies ({', '.join(wrong) or 'UUID differs'}).")
        self.step("defined", reached="defined")
        if not c.same_host:
            lv.undefine_domain(self.src.conn, uuid, keep_nvram=True)
            self.undo.undefined_at_source = True
            self.log(f"Undefined {c.vm_name} on {c.source.name} (its original disks are still there)")
            self.step("undefined", reached="undefined")
        if self.ctx is not None:
            self.ctx.progress(95)

    # ------------------------------------------------------------------ start
    def start(self, uuid: str) -> None:
        c = self.cold
        self.step("starting", status=C.STARTING, phase=f"Starting {c.vm_name} on {c.destination.name}")
        self.since_start = time.time()
        self.undo.started = True
        lv.start_domain(self.dst.conn, uuid)
        deadline = time.monotonic() + START_WAIT_S
        while True:
            state = lv.get_domain(self.dst.conn, uuid).state
            if state == "running":
                break
            if time.monotonic() > deadline:
                raise ColdFailed(f"{c.vm_name} did not reach running on {c.destination.name} ({state}).",
                                 hint="See the guest's log on the destination (/var/log/libvirt/qemu/NAME.log).")
            time.sleep(0.5)
        self.log(f"{c.vm_name} is running on {c.destination.name}")
        self.step("started", reached="started")

    def _first_beats(self):
        """The guest's own heartbeat after booting, where a probe is configured (the lab's guests)."""
        if not getattr(settings, "VMPORTAL_GUEST_HEARTBEAT_PROBE", ""):
            return None
        deadline = time.monotonic() + BOOT_HEARTBEAT_WAIT_S
        while True:
            heartbeat = probe_guest(self.cold.vm_name, self.since_start)
            if heartbeat is not None and heartbeat.beats > 0 or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        if heartbeat is not None and heartbeat.beats:
            self.log(f"{self.cold.vm_name} is beating on {self.cold.destination.name} ({heartbeat.beats} beats)")
        return heartbeat

    # ------------------------------------------------------------------ the end
    def finish(self, uuid: str) -> dict:
        c = self.cold
        removed, kept = [], []
        for move in self.moves:
            if not move.copied:
                continue
            if c.keep_source:
                kept.append(move.source_path)
            elif images.remove_file(self.src.ssh, move.source_path):
                removed.append(move.source_path)
            else:
                kept.append(move.source_path)
                self.log(f"Could not remove the original {move.source_path}; remove it by hand",
                         JobLogLevelChoices.WARNING)
        if removed:
            self.log(f"Removed the originals on {c.source.name}: {', '.join(removed)}")
        heartbeat = self._first_beats() if c.start else None
        summary = {
            "files": len([m for m in self.moves if m.copied]),
            "bytes": c.bytes_total,
            "copy_seconds": c.copy_seconds,
            "copy_mib_per_s": (c.bytes_total / 2**20 / c.copy_seconds) if c.copy_seconds else None,
            "copied_via": sorted({f.get("via") for f in c.files if f.get("via")}),
            "verify_seconds": self.verify_seconds,
            "originals_removed": removed,
            "originals_kept": kept,
            "started": c.start,
            "heartbeat_beats": heartbeat.beats if heartbeat else None,
        }
        where = "on " + c.destination.name
        disks = ", ".join(m.destination_path for m in self.moves if m.kind == "disk") or "no file disks"
        state = "running" if c.start else "shut off"
        outcome = f"Defined {where} ({state}), disks: {disks}."
        if not c.same_host:
            outcome += f" Not defined on {c.source.name} any more."
        cold_services.cold_finish(cold=self.cold, status=C.SUCCEEDED, outcome=outcome, summary=summary)
        self.log(outcome)
        self._refresh_inventory()
        return {"status": C.SUCCEEDED.value, **summary}

    def fail(self, uuid: str, exc: BaseException) -> dict:
        c = self.cold
        if isinstance(exc, ColdFailed):
            message, hint = exc.message, exc.hint
        elif isinstance(exc, AdapterError):
            # Say which step met it: "Defining web1 on host2: Lost the libvirt connection (…)".
            message, hint = f"{c.phase}: {exc.message}", exc.hint or ""
            if isinstance(exc, HostUnreachable) and not hint:
                hint = ("Check that libvirtd and sshd run on both hosts (systemctl status libvirtd), then "
                        "start the move again.")
        else:
            logger.exception("cold migration #%s failed unexpectedly", c.pk)
            message, hint = f"{type(exc).__name__}: {exc}", ""
        checked_only = isinstance(exc, ColdFailed) and exc.checked
        self.log(message, JobLogLevelChoices.ERROR)
        steps, clean = ([], True) if checked_only else self.roll_back(uuid)
        where, intact = self.where_now(uuid)
        status = C.FAILED if clean and intact else C.NEEDS_ATTENTION
        if status == C.NEEDS_ATTENTION:
            hint = (hint + " " if hint else "") + ("The undo did not complete: see the steps below and fix the "
                                                    "guest's definition by hand from its original XML.")
        cold_services.cold_finish(cold=c, status=status, outcome=where, error=message, error_hint=hint.strip(),
                             rollback=steps, summary={"rolled_back": bool(steps)})
        self.log(where)
        self._refresh_inventory()
        # Recorded; now fail the job too, so its row and the job list say what happened.
        raise ColdNotCompleted(f"{message} — {where}", hint=hint.strip())

    def roll_back(self, uuid: str) -> tuple[list[dict], bool]:
        """Undo what was done, newest first; each step recorded with whether it worked."""
        c, u = self.cold, self.undo
        steps: list[dict] = []

        def attempt(what: str, action: Callable[[], object], *, unsure: bool = False) -> None:
            """``unsure``: it may not have been done at all; an unreachable host then leaves it unknown."""
            try:
                action()
                steps.append({"step": what, "ok": True})
                self.log(f"Undo: {what}")
            except HostUnreachable as exc:
                if not unsure:
                    steps.append({"step": what, "ok": False, "error": exc.message})
                    self.log(f"Undo failed: {what}: {exc.message}", JobLogLevelChoices.ERROR)
                    return
                steps.append({"step": what, "ok": None, "error": f"not reachable, probably never defined there: "
                                                                  f"{exc.message}"})
                self.log(f"Undo skipped: {what}: the host does not answer ({exc.message})",
                         JobLogLevelChoices.WARNING)
            except AdapterError as exc:  # record each failed undo step and go on with the others
                text = exc.message
                steps.append({"step": what, "ok": False, "error": text})
                self.log(f"Undo failed: {what}: {text}", JobLogLevelChoices.ERROR)

        def with_conn(host: Host, call: Callable[[object], object]) -> Callable[[], object]:
            def act():
                # A fresh session: the one the move used may be what failed.
                with access.open_session(host) as session:
                    return call(session.libvirt)
            return act

        if u.started:
            attempt(f"power off {c.vm_name} on {c.destination.name}",
                    with_conn(c.destination, lambda conn: _destroy_if_running(conn, uuid)))
        if u.redefined_in_place:
            attempt(f"define {c.vm_name} on {c.source.name} with its original XML",
                    with_conn(c.source, lambda conn: lv.define_domain(conn, c.original_xml)))
        if u.undefined_at_source:
            attempt(f"define {c.vm_name} again on {c.source.name} with its original XML",
                    with_conn(c.source, lambda conn: lv.define_domain(conn, c.original_xml)))
        if u.defined_at_destination or u.maybe_defined_at_destination:
            attempt(f"undefine {c.vm_name} on {c.destination.name}",
                    with_conn(c.destination, lambda conn: _undefine_if_there(conn, uuid)),
                    unsure=u.maybe_defined_at_destination and not u.defined_at_destination)
        for writer, path, runas in reversed(u.created):
            attempt(f"remove the copy {path} on {writer.host.name}",
                    lambda h=writer.host, p=path, r=runas: _remove_copy(h, p, r))
        return steps, all(s["ok"] is not False for s in steps)

    def where_now(self, uuid: str) -> tuple[str, bool]:
        """Where the guest is defined now, in words, and whether it is intact on its source."""
        c = self.cold
        try:
            with access.open_session(c.source) as session:
                xml = lv.inactive_xml(session.libvirt, uuid)
        except DomainNotFound:
            xml = None
        except AdapterError as exc:
            return f"Could not ask {c.source.name} where {c.vm_name} is: {exc.message}", False
        original = {d.target: d.source for d in lv.parse_domain_xml(c.original_xml).disks} if c.original_xml else {}
        if xml is None:
            return f"{c.vm_name} is not defined on {c.source.name}.", False
        now = {d.target: d.source for d in lv.parse_domain_xml(xml).disks}
        if original and now != original:
            return f"{c.vm_name} is defined on {c.source.name}, but not with its original disks ({now}).", False
        missing = [p for p in original.values() if p.startswith("/") and not _exists(c.source, p)]
        if missing:
            return f"{c.vm_name} is defined on {c.source.name}, but {', '.join(missing)} is missing.", False
        elsewhere = ""
        if not c.same_host:
            try:
                with access.open_session(c.destination) as session:
                    lv.get_domain(session.libvirt, uuid)
                elsewhere = f" It is also defined on {c.destination.name}: undefine it there."
            except DomainNotFound:
                elsewhere = f" Not defined on {c.destination.name}."
            except AdapterError:
                u = self.undo
                if u.defined_at_destination or u.maybe_defined_at_destination:
                    elsewhere = (f" {c.destination.name} did not answer: if it lists {c.vm_name} once it is back, "
                                 f"undefine it there (`virsh undefine {c.vm_name}`).")
                else:
                    elsewhere = f" Nothing was defined on {c.destination.name} (it did not answer)."
        return (f"{c.vm_name} is defined on {c.source.name} with its original disks, unchanged.{elsewhere}",
                not elsewhere.startswith(" It is also"))

    def _refresh_inventory(self) -> None:
        # Each refresh is a Job of its own that records its own failure; the move's record stands.
        whereabouts.refresh_hosts(self.cold, self.ctx)


# ---------------------------------------------------------------------------
# A cold migration whose worker died


def _where(record: ColdMigration) -> cold.Where:
    uuid = str(record.vm_uuid)
    original = {d.target: d.source for d in lv.parse_domain_xml(record.original_xml).disks} if record.original_xml else {}

    def ask(host: Host) -> tuple[bool | None, dict | None, str | None]:
        try:
            with access.open_session(host) as session:
                conn = session.libvirt
                try:
                    info = lv.get_domain(conn, uuid)
                except DomainNotFound:
                    return False, None, None
                xml = lv.inactive_xml(conn, uuid)
        except AdapterError:
            return None, None, None
        return True, {d.target: d.source for d in lv.parse_domain_xml(xml).disks}, info.state

    src_defined, src_disks, _ = ask(record.source)
    points_at_original = (src_disks == original) if src_disks is not None else None
    if record.same_host:
        return cold.Where(src_defined, points_at_original, src_defined, None)
    dst_defined, _, dst_state = ask(record.destination)
    return cold.Where(
        source_defined=src_defined,
        source_points_at_original=points_at_original,
        destination_defined=dst_defined,
        destination_running=None if dst_defined is None else dst_state not in (None, "shutoff"),
    )


def reconcile_cold_migration(*, cold_id: int, reason: str, ctx: JobContext | None) -> dict:
    """Ask the hosts where an orphaned cold migration's guest is defined, finish or undo it, record the truth."""
    record = ColdMigration.objects.select_related("source", "destination", "share", "job").get(pk=cold_id)
    if not record.is_active:
        return {"status": record.status, "reconciled": False}
    _log(ctx, f"Reconciling cold migration #{record.pk} ({record.status}): {reason}")
    if record.copy_grant:
        _remove_leftover_key(record, ctx)
    where = _where(record)
    decision = cold.settle(where, same_host=record.same_host)
    _log(ctx, f"Found: {where}; decision: {decision}")
    run = _Run(record, ctx, None)
    run.moves = [cold.FileMove.from_json(f) for f in record.files]
    copied = record.status in (C.COPYING, C.DEFINING, C.STARTING) or "copied" in record.reached
    error = f"Its worker stopped ({reason})."
    if decision == cold.SETTLE_UNKNOWN:
        cold_services.cold_finish(
            cold=record, status=C.NEEDS_ATTENTION, error=error, action=A.COLD_RECONCILED,
            outcome="A host did not answer, so where the guest is defined is unknown.",
            error_hint="Bring both hosts back, then check `virsh list --all` on each; the original XML is on this page.",
        )
        return {"status": C.NEEDS_ATTENTION.value, "reconciled": True}
    if decision == cold.SETTLE_MOVED:
        outcome = (f"{record.vm_name} is defined on {record.destination.name} with its disks moved; the move had got "
                   f"that far. Its original disk files were kept on {record.source.name}: remove them by hand once "
                   "you are satisfied.")
        status = C.SUCCEEDED
        if not record.same_host and where.source_defined:
            status = C.NEEDS_ATTENTION
            outcome = (f"{record.vm_name} is defined on both {record.source.name} and {record.destination.name}. "
                       f"Keep the one that runs; undefine the other (`virsh undefine {record.vm_name}`).")
        cold_services.cold_finish(cold=record, status=status, outcome=outcome, error=error,
                             action=A.COLD_RECONCILED)
        run._refresh_inventory()
        return {"status": status.value, "reconciled": True}
    # Roll back or restore: the source keeps (or gets back) its original definition.
    u = run.undo
    u.undefined_at_source = decision == cold.SETTLE_RESTORE and not record.same_host
    u.redefined_in_place = decision == cold.SETTLE_RESTORE and record.same_host
    u.defined_at_destination = bool(where.destination_defined) and not record.same_host
    if copied:
        for move in run.moves:
            if move.copied:
                writer = record.source if move.route == cold.ROUTE_ON_HOST else record.destination
                u.created.append((_Side(host=writer, conn=None, ssh=None), move.write_path, []))
    steps, clean = run.roll_back(str(record.vm_uuid))
    outcome, intact = run.where_now(str(record.vm_uuid))
    status = C.FAILED if clean and intact else C.NEEDS_ATTENTION
    cold_services.cold_finish(cold=record, status=status, outcome=outcome, error=error, rollback=steps,
                         error_hint="" if status == C.FAILED else "Finish the undo by hand from the steps below.",
                         action=A.COLD_RECONCILED)
    run._refresh_inventory()
    return {"status": status.value, "reconciled": True}


def _remove_leftover_key(record: ColdMigration, ctx: JobContext | None) -> None:
    """The one-time copy key (and the source's private half) a dead worker left: removed, and audited."""
    grant = direct_copy.Grant.from_json(record.copy_grant)
    problems = []
    for host, remove in (
        (record.destination, lambda ssh: direct_copy.revoke(ssh, keys_file=grant.keys_file, tag=grant.tag,
                                                            work_dir=grant.work_dir)),
        (record.source, lambda ssh: grant.source_dir and direct_copy.cleanup_source(ssh, source_dir=grant.source_dir)),
    ):
        try:
            with access.open_session(host) as session:
                remove(session.ssh)
        except AdapterError as exc:
            problems.append(f"{host.name}: {exc.message}")
    cold_services.cold_copy_key_removed(cold=record, problems=problems, by_reconciler=True)
    _log(ctx, f"One-time copy key {grant.fingerprint}: " + ("; ".join(problems) if problems else "removed"),
         level=JobLogLevelChoices.ERROR if problems else JobLogLevelChoices.INFO)


def _exists(host: Host, path: str) -> bool:
    try:
        with access.open_session(host) as session:
            return images.path_exists(session.ssh, path)
    except AdapterError:
        return True  # cannot tell: do not claim it is missing


def _destroy_if_running(conn, uuid: str) -> None:
    try:
        if lv.get_domain(conn, uuid).state != "shutoff":
            lv.destroy_domain(conn, uuid)
    except DomainNotFound:
        return


def _undefine_if_there(conn, uuid: str) -> None:
    try:
        lv.undefine_domain(conn, uuid, keep_nvram=True)
    except DomainNotFound:
        return


def _remove_copy(host: Host, path: str, runas: list[str]) -> None:
    # A fresh session: the one the copy used may be what failed.
    with access.open_session(host) as session:
        ssh = session.ssh
        if not images.remove_file(ssh, path, runas=runas):
            raise AdapterError(f"could not remove {path}")
        if images.path_exists(ssh, path):
            raise AdapterError(f"{path} is still there")


def _shown_rate(nbytes: int, seconds: float) -> float:
    """MiB/s as the files table shows it: whole numbers, one decimal below 10 (a small disk is not 0 MiB/s)."""
    rate = nbytes / 2**20 / max(seconds, 1e-3)
    return round(rate, 1) if rate < 10 else round(rate)


def _shown_expiry(stamp: str) -> str:
    """The key's expiry (sshd's YYYYMMDDHHMMSS) as the log shows it: 2026-12-04 12:38:42."""
    if len(stamp) == 14 and stamp.isdigit():
        return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[8:10]}:{stamp[10:12]}:{stamp[12:]}"
    return stamp


__all__ = [
    "ColdFailed", "ColdNotCompleted", "ProgressCallback", "StepCallback", "reconcile_cold_migration",
    "run_cold_migration",
]
