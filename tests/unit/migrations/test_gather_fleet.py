"""migrations_app.gather_fleet: every guest of a host against every destination, each probe once.

The fake fleet (tests/fakes/fleet.py) plays a source with several guests (disks on a shared
NFS directory, local disks, a read-only ISO, a shut-off guest) and three destinations, one of
which does not answer. The contract: for every guest and destination, the fleet's facts are
exactly what ``gather.gather`` returns for that one guest and pair.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
from collections import Counter

import pytest

from hosts.adapters import migration as mg
from hosts.adapters import facts as host_facts, probes as P
from hosts.adapters.errors import CommandTimeout, DomainNotFound
from hosts.adapters.libvirt import DiskInfo
from migrations_app import gather as G
from migrations_app import gather_fleet as GF
from migrations_app.gather_parts import SSH_CHANNELS_PER_HOST, ChannelLimit
from migrations_app.options import MigrationOptions
from migrations_app.preflight import run_preflight
from tests.fakes.fleet import make_domain

LIVE = MigrationOptions()
COPY = MigrationOptions(copy_storage=True)
QEMU_CONF = "/etc/libvirt/qemu.conf"
IMAGES = "/var/lib/libvirt/images"
ISO = f"{IMAGES}/debian.iso"
DESTINATIONS = ("kvm-b", "kvm-c", "kvm-d")


def disk(source: str, *, target="vda", readonly=False):
    return DiskInfo(target=target, device="disk", source_type="file", source=source, protocol="",
                    format="qcow2", readonly=readonly, shareable=False)


def guest(name: str, *disks: DiskInfo, **kw):
    kw.setdefault("cpu_mode", "custom")
    kw.setdefault("cpu_model", "qemu64")
    return make_domain(name, disks=list(disks), **kw)


class Hosts:
    """kvm-a (source) with guests; kvm-b and kvm-c mount /shared from nas; kvm-d does not answer."""

    def __init__(self, fleet, guests=None):
        self.fleet = fleet
        fleet.add("nas", address="10.0.0.10")
        conf = {QEMU_CONF: 'user = "root"\ngroup = "root"\n'}
        shared = {"/shared": ("nfs4", "nas:/shared")}
        self.src = fleet.add("kvm-a", address="10.0.0.11", files=dict(conf), mounts=dict(shared))
        self.b = fleet.add("kvm-b", address="10.0.0.12", files=dict(conf), mounts=dict(shared), cpu_compare="superset")
        self.c = fleet.add("kvm-c", address="10.0.0.13", files={QEMU_CONF: 'user = "qemu"\ndynamic_ownership = 0\n'},
                           mounts=dict(shared), cpu_compare="incompatible")
        self.d = fleet.add("kvm-d", address="10.0.0.14", reachable=False)
        for host in (self.src, self.b, self.c):
            host.add_pool("default", IMAGES)
        if guests is None:
            guests = [
                guest("web-1", disk("/shared/web-1.qcow2")),
                guest("web-2", disk("/shared/web-2.qcow2"), disk(ISO, target="sda", readonly=True)),
                guest("db", disk(f"{IMAGES}/db.qcow2"), cpu_model="Skylake-Client"),
                guest("off", disk("/shared/off.qcow2"), state="shutoff", reason="shutdown"),
                guest("paused", disk("/shared/paused.qcow2"), disk(ISO, target="sda", readonly=True),
                      state="paused", reason="user", cpu_mode=None, cpu_model=None),
            ]
        self.guests = guests
        self.src.domains = {g.uuid: g for g in guests}
        for g in guests:
            for d in g.disks:
                self.src.put(d.source, f"image of {g.name} {d.target}")
        self.src.put(ISO, "iso bytes")
        self.b.put(ISO, "iso bytes")  # the same release: counts as the same file
        self.c.put(ISO, "another release")
        self.c.qemu_denied = {("/shared/web-1.qcow2", "w")}
        self.c.dropped = True  # every packet dropped: the listener's port and the SSH-port retry time out
        for g in guests:
            if g.name == "db":
                self.src.block_sizes[(g.uuid, "vda")] = (20 * 2**30, 3 * 2**30, 3 * 2**30)
        self.b.room_kib[IMAGES] = 50 * 2**20

    @contextlib.contextmanager
    def sessions(self, *names):
        with contextlib.ExitStack() as stack:
            yield [stack.enter_context(self.fleet.session_for(self.fleet.host_row(n, save=False))) for n in names]
        assert self.fleet.open_connections == 0

    def gather_fleet(self, options=LIVE, destinations=DESTINATIONS, guest_uuids=None):
        with self.sessions("kvm-a", *destinations) as (src, *dsts):
            return GF.gather_fleet(
                source=G.Endpoint(name="kvm-a", session=src),
                destinations=[G.Endpoint(name=n, session=s) for n, s in zip(destinations, dsts, strict=True)],
                guest_uuids=guest_uuids, options=options)

    def gather_one(self, guest_uuid, destination, options=LIVE):
        with self.sessions("kvm-a", destination) as (src, dst):
            return G.gather(source=G.Endpoint(name="kvm-a", session=src),
                            destination=G.Endpoint(name=destination, session=dst),
                            guest_uuid=guest_uuid, options=options)

    def leftover_markers(self) -> list[str]:
        return [p for h in self.fleet.hosts.values() for p in h.files if P.MARKER_PREFIX in p]


def probes_run(host, script, shell="sh") -> int:
    return sum(1 for argv in host.commands if len(argv) > 2 and argv[:3] == [shell, "-c", script])


def disks_asked(host) -> list[str]:
    """The disk paths a destination was asked about, over every disk-probe command."""
    paths = []
    for argv in host.commands:
        if argv[:3] == ["sh", "-c", P.DISK_PROBE_SH]:
            paths.append(argv[5])
        elif argv[:3] == ["bash", "-c", P.DISK_PROBES_BASH]:
            items = argv[6 + int(argv[5]):]
            paths += items[1::4]
    return paths


def count(host, predicate) -> int:
    return sum(1 for argv in host.commands if predicate(argv))


def is_getent(argv):
    return argv[:2] == ["getent", "ahosts"]


def is_listener(argv):
    return "python3" in argv or P.LISTENER_SOCAT_SH in argv


def is_connect(argv):
    return P.CONNECT_SH in argv


def connect_attempts(host) -> int:
    """Connection attempts a host made: one per CONNECT_SH, one per target of a CONNECTS_SH."""
    return sum(1 if is_connect(a) else (len(a) - 5) // 2 if a[:3] == ["sh", "-c", P.CONNECTS_SH] else 0
               for a in host.commands)


def is_qemu_conf(argv):
    return argv[:3] == ["sh", "-c", P.QEMU_IDENTITY_SH]


# --- the contract: the same facts as gather() -------------------------------------------


@pytest.mark.parametrize("options", [LIVE, COPY], ids=["live", "copy-storage"])
def test_every_pair_equals_what_gather_returns_for_it(fleet, options):
    f = Hosts(fleet)
    facts = f.gather_fleet(options)
    assert [g.name for g in facts.guests] == ["db", "off", "paused", "web-1", "web-2"]
    assert [d.name for d in facts.destinations] == list(DESTINATIONS)
    assert len(facts.pairs) == len(facts.guest_sides) == 5 * 3
    for g in f.guests:
        for name in DESTINATIONS:
            assert (facts.pair(g.uuid, name), facts.guest_for(g.uuid, name)) == f.gather_one(g.uuid, name, options), \
                (g.name, name)
    assert f.leftover_markers() == []


def test_the_facts_differ_per_destination_where_the_hosts_do(fleet):
    f = Hosts(fleet)
    facts = f.gather_fleet()
    web1, web2, db = (next(g for g in f.guests if g.name == n) for n in ("web-1", "web-2", "db"))
    # shared disk: the same file on both answering destinations; kvm-c's QEMU user may not write it
    assert facts.guest_for(web1.uuid, "kvm-b").disks[0].destination_can_open is True
    vda_c = facts.guest_for(web1.uuid, "kvm-c").disks[0]
    assert vda_c.same_file_on_destination is True and vda_c.destination_can_open is False
    # the read-only ISO: identical on kvm-b, another release on kvm-c
    assert facts.guest_for(web2.uuid, "kvm-b").disks[1].same_file_on_destination is True
    assert facts.guest_for(web2.uuid, "kvm-c").disks[1].same_file_on_destination is False
    # a local disk is nowhere else
    assert facts.guest_for(db.uuid, "kvm-b").disks[0].same_file_on_destination is False
    assert facts.pair(web1.uuid, "kvm-b").cpu_compare == "superset"
    assert facts.pair(web1.uuid, "kvm-c").cpu_compare == "incompatible"
    c = facts.pair(web1.uuid, "kvm-c")
    assert c.ports_reachable is False and c.migration_address_reachable is False  # dropped: nothing answers
    # the source's own view leaves every destination fact unchecked
    assert all(d.same_file_on_destination is None and d.destination_can_open is None and d.perm_detail == ""
               for g in facts.guests for d in g.disks)
    assert facts.guest(web1.uuid.upper()).name == "web-1"


def test_an_unreachable_destination_gives_unreachable_facts_not_an_error(fleet):
    f = Hosts(fleet)
    facts = f.gather_fleet()
    for g in f.guests:
        pair, side = facts.pair(g.uuid, "kvm-d"), facts.guest_for(g.uuid, "kvm-d")
        assert pair.source.reachable and not pair.destination.reachable
        assert pair.cpu_compare == "unknown" and pair.ports_reachable is None
        assert all(d.destination_can_open is None for d in side.disks)
        assert {v.check: v.status for v in run_preflight(pair, side, LIVE)}["reachability"] == "fail"
    assert not facts.destinations[2].reachable and facts.source_side.reachable


def test_every_defined_guest_when_none_are_named_and_only_those_named_otherwise(fleet):
    f = Hosts(fleet)
    web1, off = (next(g for g in f.guests if g.name == n) for n in ("web-1", "off"))
    facts = f.gather_fleet(guest_uuids=[off.uuid.upper(), web1.uuid, f" {web1.uuid} "])
    assert [g.name for g in facts.guests] == ["off", "web-1"]  # sorted, asked twice counted once
    assert facts.guest(off.uuid).state == "shutoff"
    assert {k[0] for k in facts.pairs} == {web1.uuid, off.uuid}
    with pytest.raises(KeyError, match="no facts for guest"):
        facts.pair(f.guests[2].uuid, "kvm-b")


def test_a_guest_the_source_lacks_raises_like_gather(fleet):
    f = Hosts(fleet)
    missing = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    with pytest.raises(DomainNotFound, match=f"kvm-a has no guest with UUID {missing}"):
        f.gather_fleet(guest_uuids=[f.guests[0].uuid, missing])
    assert f.leftover_markers() == []
    assert not any(probes_run(h, P.MARKER_SH) or probes_run(h, P.MARKERS_SH) for h in fleet.hosts.values())


def test_a_source_that_does_not_answer(fleet):
    f = Hosts(fleet)
    f.src.libvirt_up = False
    assert f.gather_fleet().guests == ()  # nothing to list
    facts = f.gather_fleet(guest_uuids=[f.guests[0].uuid])
    (only,) = facts.guests
    assert only.state == "unknown" and not facts.source_side.reachable
    assert not facts.pair(f.guests[0].uuid, "kvm-b").source.reachable


def test_hostile_arguments_are_refused_clearly(fleet):
    f = Hosts(fleet)
    with pytest.raises(TypeError, match="not one string"):
        f.gather_fleet(guest_uuids=f.guests[0].uuid)
    with pytest.raises(TypeError, match="must be a string"):
        f.gather_fleet(guest_uuids=[42])
    with pytest.raises(ValueError, match="named more than once: kvm-b"):
        f.gather_fleet(destinations=("kvm-b", "kvm-b"))


# --- what is probed once ------------------------------------------------------------------


def shared_guests(n: int):
    """n running guests with their disks in one shared directory, the same CPU, and the same ISO."""
    return [guest(f"g{i}", disk(f"/shared/g{i}.qcow2"), disk(ISO, target="sda", readonly=True)) for i in range(n)]


@pytest.fixture
def compares(monkeypatch):
    calls = []
    real = mg.compare_guest_cpu

    def counting(conn, **kw):
        calls.append(conn.host.name)
        return real(conn, **kw)

    monkeypatch.setattr(mg, "compare_guest_cpu", counting)
    return calls


@pytest.mark.parametrize("n", [2, 8])
def test_host_and_pair_probes_do_not_grow_with_the_guests(fleet, compares, n):
    f = Hosts(fleet, guests=shared_guests(n))
    f.c.dropped = False
    f.gather_fleet(destinations=("kvm-b", "kvm-c"))
    src, b, c = f.src, f.b, f.c
    # per pair: one resolution each way (the source's in one command for both), one listener, one
    # connection attempt
    assert count(src, lambda a: a[:3] == ["sh", "-c", host_facts.RESOLVE_SH]) == 1 and count(src, is_getent) == 0
    assert connect_attempts(src) == 2
    for dst in (b, c):
        assert count(dst, is_getent) == 1 and count(dst, is_listener) == 1 and count(dst, is_qemu_conf) == 1
        # per (disk path, destination): n images and the one ISO, all in one command
        assert sorted(disks_asked(dst)) == sorted([ISO] + [f"/shared/g{i}.qcow2" for i in range(n)])
        assert probes_run(dst, P.DISK_PROBES_BASH, "bash") == 1 and probes_run(dst, P.DISK_PROBE_SH) == 0
    # per directory on the source: /shared and the images directory, in one command; removed at once
    assert probes_run(src, P.MARKERS_SH) == 1 and probes_run(src, P.MARKER_SH) == 0
    assert count(src, lambda a: a[0] == "rm") == 1
    # the ISO is the same file on kvm-b by content: once per path on the source, once per destination
    assert probes_run(src, P.DIGESTS_SH) == 1 and probes_run(b, P.DIGESTS_SH) == 1
    # one CPU definition shared by every guest: one comparison per destination
    assert Counter(compares) == {"kvm-b": 1, "kvm-c": 1}
    host_and_pair = sum(count(h, lambda a: is_getent(a) or is_listener(a) or is_qemu_conf(a)) + connect_attempts(h)
                        for h in (src, b, c))
    # per pair: the destination's resolution, a listener, a connection; per destination: qemu.conf; the
    # source's resolutions of both destinations: one command (counted above)
    assert host_and_pair == 2 * 3 + 2
    # SSH execs, whatever the number of guests: the source one per round after the first (resolve and
    # markers; the connection attempts; markers removed and digests), each destination two (resolve,
    # qemu.conf and listener; disk probes and digests)
    assert (src.execs, b.execs, c.execs) == (3, 2, 2)


def test_a_failed_disk_command_leaves_that_destination_unverified_only(fleet):
    f = Hosts(fleet, guests=shared_guests(3))
    f.b.script(shlex.join(["bash", "-c", P.DISK_PROBES_BASH]), CommandTimeout(["bash"], 10))
    facts = f.gather_fleet(destinations=("kvm-b", "kvm-c"))
    for g in f.guests:
        assert all(d.same_file_on_destination is None and d.destination_can_open is None
                   for d in facts.guest_for(g.uuid, "kvm-b").disks)
        assert facts.guest_for(g.uuid, "kvm-c").disks[0].same_file_on_destination is True
        assert facts.pair(g.uuid, "kvm-b").ports_reachable is True  # the other probes still answered
    assert f.leftover_markers() == []


def test_guests_with_different_cpus_compare_apart(fleet, compares):
    guests = [guest("a", disk("/shared/a.qcow2")), guest("b", disk("/shared/b.qcow2")),
              guest("c", disk("/shared/c.qcow2"), cpu_model="Skylake-Client"),
              guest("d", disk("/shared/d.qcow2"), cpu_mode=None, cpu_model=None)]  # no <cpu>: nothing to ask
    f = Hosts(fleet, guests=guests)
    facts = f.gather_fleet(destinations=("kvm-b",))
    assert Counter(compares) == {"kvm-b": 3}  # qemu64, Skylake-Client, and the one without <cpu> (answers "unknown")
    assert facts.pair(guests[3].uuid, "kvm-b").cpu_compare == "unknown"
    assert facts.pair(guests[2].uuid, "kvm-b").cpu_compare == "superset"


# --- gather_evacuation: inventory hosts, one session each ---------------------------------


@pytest.mark.django_db
def test_evacuation_opens_each_host_once_and_closes_everything(fleet):
    f = Hosts(fleet)
    rows = {n: fleet.host_row(n) for n in ("kvm-a", *DESTINATIONS)}
    opened = []
    real = fleet.session_for

    def session_for(host):
        opened.append(host.name)
        return real(host)

    from hosts import access

    with access.override(session_for):
        facts = GF.gather_evacuation(source=rows["kvm-a"], destinations=[rows[n] for n in DESTINATIONS],
                                     options=LIVE)
    assert Counter(opened) == {"kvm-a": 1, "kvm-b": 1, "kvm-c": 1, "kvm-d": 1}
    # kvm-d never answered; every other host got one SSH and one libvirt connection
    answered = ("kvm-a", "kvm-b", "kvm-c")
    assert Counter(fleet.connections) == {(kind, n): 1 for kind in ("ssh", "libvirt") for n in answered}
    assert fleet.open_connections == 0
    assert len(facts.guests) == 5 and facts.pair(f.guests[0].uuid, "kvm-b").destination.reachable
    # Kept for the runners that follow: every guest towards every destination, as gathered.
    from migrations_app.services.facts import preflight_facts_latest

    _when, _until, pair, guest = preflight_facts_latest(guest_uuid=f.guests[0].uuid, source=rows["kvm-a"],
                                                destination=rows["kvm-b"], copy_storage=False)
    assert (pair, guest) == (facts.pair(f.guests[0].uuid, "kvm-b"), facts.guest_for(f.guests[0].uuid, "kvm-b"))
    assert not preflight_facts_latest(guest_uuid=f.guests[0].uuid, source=rows["kvm-a"], destination=rows["kvm-d"],
                                      copy_storage=False).pair.destination.reachable
    with pytest.raises(ValueError, match="cannot be a destination of its own evacuation"):
        GF.gather_evacuation(source=rows["kvm-a"], destinations=[rows["kvm-a"]], options=LIVE)


def test_ssh_commands_to_one_host_are_capped(fleet):
    inside, gate = [], threading.Event()
    lock = threading.Condition()

    class Slow:
        target = None

        def run(self, argv, **kwargs):
            with lock:
                inside.append(argv)
                lock.notify_all()
            assert gate.wait(timeout=10)

    limited = ChannelLimit(Slow())
    threads = [threading.Thread(target=limited.run, args=(["true"],)) for _ in range(SSH_CHANNELS_PER_HOST + 3)]
    for t in threads:
        t.start()
    with lock:
        assert lock.wait_for(lambda: len(inside) == SSH_CHANNELS_PER_HOST, timeout=10)
    assert not limited._slots.acquire(blocking=False)  # every slot taken: the others wait
    gate.set()
    for t in threads:
        t.join(timeout=10)
    assert len(inside) == SSH_CHANNELS_PER_HOST + 3
