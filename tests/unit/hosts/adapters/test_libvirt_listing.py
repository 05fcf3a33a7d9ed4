"""Listing a host's guests asks the host a fixed number of times plus one or two calls per guest,
and tells exactly what asking each guest alone would (the real binding on libvirt's test driver)."""

from __future__ import annotations

import uuid

import libvirt
import pytest

from hosts.adapters import libvirt as lv

TEST_URI = "test:///default"


def guest_xml(name: str, memory_kib: int = 65536) -> str:
    return (f"<domain type='test'><name>{name}</name><uuid>{uuid.uuid4()}</uuid>"
            f"<memory>{memory_kib}</memory><vcpu>1</vcpu><os><type arch='i686'>hvm</type></os>"
            "<devices><disk type='file' device='disk'><source file='/guest/x.img'/><target dev='vda'/></disk>"
            "</devices></domain>")


@pytest.fixture
def conn():
    # test:///default is shared by the whole process: each test's guests have names of their own
    # and are removed afterwards.
    connection = libvirt.open(TEST_URI)
    made = []
    try:
        yield connection, made
    finally:
        for dom in made:
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
            except libvirt.libvirtError:
                pass
        connection.close()


def a_fleet_of_guests(connection, made, n: int) -> None:
    """n guests of every kind: running, paused, shut off, autostarted, with a managed save, transient."""
    tag = uuid.uuid4().hex[:6]
    for i in range(n):
        kind = i % 5
        if kind == 4:
            made.append(connection.createXML(guest_xml(f"list-transient-{tag}-{i}"), 0))
            continue
        dom = connection.defineXML(guest_xml(f"list-{tag}-{i}"))
        made.append(dom)
        if kind in (0, 1, 3):
            dom.create()
        if kind == 1:
            dom.suspend()
            dom.setAutostart(1)
        if kind == 3:
            dom.managedSave(0)


class Counting:
    """The connection and its domains, counting every call made to the host."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __getattr__(self, name):
        attr = getattr(self.real, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            out = attr(*args, **kwargs)
            if name == "listAllDomains":
                return [CountingDomain(d, self.calls) for d in out]
            if name == "getAllDomainStats":
                return [(CountingDomain(d, self.calls), v) for d, v in out]
            return out
        return call


class CountingDomain:
    LOCAL = {"UUIDString", "ID", "name"}  # kept by the domain object; no call to the host

    def __init__(self, real, calls):
        self.real, self.calls = real, calls

    def __getattr__(self, name):
        attr = getattr(self.real, name)

        def call(*args, **kwargs):
            if name not in self.LOCAL:
                self.calls.append(f"dom.{name}")
            return attr(*args, **kwargs)
        return call


def test_the_bulk_listing_tells_what_asking_each_guest_alone_tells(conn):
    connection, made = conn
    a_fleet_of_guests(connection, made, 10)
    listed = {d.uuid: d for d in lv.list_domains(connection, definitions=True)}
    for dom in connection.listAllDomains(0):
        alone = lv.domain_info(dom)
        got = listed[dom.UUIDString()]
        assert (got.name, got.state, got.reason, got.persistent, got.autostart, got.id) == (
            alone.name, alone.state, alone.reason, alone.persistent, alone.autostart, alone.id)
        assert got.managed_save == bool(dom.hasManagedSaveImage(0))
        assert bool(got.definition_xml) == alone.persistent
    kinds = {(d.state, d.persistent, d.autostart, d.managed_save) for d in listed.values() if d.name.startswith("list")}
    assert ("running", True, False, False) in kinds and ("paused", True, True, False) in kinds
    assert ("shutoff", True, False, True) in kinds and ("running", False, False, False) in kinds


@pytest.mark.parametrize("definitions", [False, True])
def test_the_calls_per_guest_stay_the_same_whatever_the_number_of_guests(conn, definitions):
    connection, made = conn
    counted = []
    for n in (5, 25):
        a_fleet_of_guests(connection, made, n if not counted else n - 5)
        counting = Counting(connection)
        guests = len(lv.list_domains(counting, definitions=definitions))
        bulk = [c for c in counting.calls if not c.startswith("dom.")]
        counted.append((guests, len(bulk), len(counting.calls) - len(bulk)))
    (few, bulk_few, per_few), (many, bulk_many, per_many) = counted
    assert many > few
    assert bulk_few == bulk_many == (5 if definitions else 4)
    persistent_share = 1 if definitions else 0
    # One definition read per guest, and one more per persistent guest when definitions are kept.
    assert per_few <= few * (1 + persistent_share) and per_many <= many * (1 + persistent_share)
    assert per_many >= many
