"""The bulk stats adapter: libvirt's block group parsed into each disk's sizes (a table of what hosts send)."""

from __future__ import annotations

import libvirt
import pytest

from hosts.adapters import stats
from hosts.adapters.errors import AdapterError
from hosts.adapters.stats import DiskStats

GIB = 2**30


class _Dom:
    def __init__(self, name: str):
        self._name = name

    def UUIDString(self) -> str:  # noqa: N802
        return f"00000000-0000-4000-8000-{abs(hash(self._name)) % 10**12:012d}"

    def name(self) -> str:
        return self._name


class _Conn:
    """Just the calls host_stats makes, answering with the raw values given."""

    def __init__(self, found, fail: bool = False):
        self.found, self.fail, self.asked = found, fail, []

    def getCPUStats(self, cpu, flags=0):  # noqa: N802
        return {"kernel": 1, "user": 2, "idle": 3, "iowait": 0}

    def getMemoryStats(self, cell, flags=0):  # noqa: N802
        return {"total": 4096, "free": 1024}

    def getInfo(self):  # noqa: N802
        return ["x86_64", 4, 2, 2400, 1, 1, 2, 1]

    def getAllDomainStats(self, groups, flags=0):  # noqa: N802
        self.asked.append(groups)
        if self.fail:
            raise libvirt.libvirtError("internal error: stats went away")
        return [(_Dom(name), values) for name, values in self.found]


def disks_of(values: dict) -> tuple[DiskStats, ...]:
    read = stats.host_stats(_Conn([("g", {"state.state": 5, **values})]))
    return read.domains[0].disks


@pytest.mark.parametrize("values, expected", [
    # A qcow2 file: capacity from its header, allocation and file size from the host.
    ({"block.count": 1, "block.0.name": "vda", "block.0.path": "/var/lib/libvirt/images/g.qcow2",
      "block.0.capacity": 20 * GIB, "block.0.allocation": 3 * GIB, "block.0.physical": 3 * GIB + 196608},
     (DiskStats("vda", "/var/lib/libvirt/images/g.qcow2", 20 * GIB, 3 * GIB, 3 * GIB + 196608),)),
    # A sparse raw file: the file is as large as the disk, little of it allocated.
    ({"block.count": 1, "block.0.name": "vdb", "block.0.path": "/srv/g.img",
      "block.0.capacity": 10 * GIB, "block.0.allocation": 2**20, "block.0.physical": 10 * GIB},
     (DiskStats("vdb", "/srv/g.img", 10 * GIB, 2**20, 10 * GIB),)),
    # An empty cdrom tray: a name and nothing else — unknown, not zero.
    ({"block.count": 1, "block.0.name": "sda"}, (DiskStats("sda", "", None, None, None),)),
    # A network disk libvirt sizes without a path.
    ({"block.count": 1, "block.0.name": "vdc", "block.0.capacity": 5 * GIB, "block.0.allocation": 0},
     (DiskStats("vdc", "", 5 * GIB, 0, None),)),
    # Several disks in index order; one without a name is skipped.
    ({"block.count": 3, "block.0.name": "vda", "block.0.capacity": GIB, "block.1.capacity": 7,
      "block.2.name": "vdb", "block.2.physical": 2 * GIB},
     (DiskStats("vda", "", GIB, None, None), DiskStats("vdb", "", None, None, 2 * GIB))),
    # Nonsense from a host: negative, not a number, a bool, beyond 2^63.
    ({"block.count": 1, "block.0.name": "vda", "block.0.capacity": -1, "block.0.allocation": "lots",
      "block.0.physical": True}, (DiskStats("vda", "", None, None, None),)),
    ({"block.count": 1, "block.0.name": "vda", "block.0.capacity": 2**64}, (DiskStats("vda", "", None, None, None),)),
    # No block group at all (a guest libvirt could not read).
    ({}, ()),
])
def test_block_fields_become_disk_sizes(values, expected):
    assert disks_of(values) == expected


def test_a_host_cannot_make_us_keep_unbounded_disks():
    values = {"block.count": 10**6, **{f"block.{i}.name": f"vd{i}" for i in range(300)}}
    assert len(disks_of(values)) == stats.MAX_DISKS


def test_one_bulk_call_asks_for_the_block_group():
    conn = _Conn([("a", {"state.state": 1}), ("b", {"state.state": 5})])
    read = stats.host_stats(conn)
    assert conn.asked == [stats.STATS_GROUPS] and stats.STATS_GROUPS & libvirt.VIR_DOMAIN_STATS_BLOCK
    assert [d.name for d in read.domains] == ["a", "b"]


def test_a_libvirt_error_is_ours():
    with pytest.raises(AdapterError):
        stats.host_stats(_Conn([], fail=True))
