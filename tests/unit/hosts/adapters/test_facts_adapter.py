"""hosts.adapters.facts: parsers, the exact commands, and a real run through SSH."""

from __future__ import annotations

import os
import shlex

import pytest

from hosts.adapters import batch, facts
from hosts.adapters.errors import CommandFailed
from hosts.adapters.ssh import CommandResult, SSHSession, SSHTarget

DEBIAN_OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
ID=debian
HOME_URL="https://www.debian.org/"
"""

ROCKY_OS_RELEASE = """\
NAME="Rocky Linux"
VERSION="9.3 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.3"
# a comment line
PRETTY_NAME='Rocky Linux 9.3 (Blue Onyx)'
"""


class FakeSession:
    """Answers run(argv) from a table; records every argv."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str]]):
        self.answers = answers
        self.calls: list[list[str]] = []

    def run(self, argv, *, timeout=30.0, check=True, stdin=None):
        if argv[:3] == ["sh", "-c", batch.BATCH_SH]:  # $0, nonce, bound, then (argv, stdin) pairs
            nonce, pairs = argv[4], argv[6:]
            inner = [shlex.split(pairs[i]) for i in range(0, len(pairs), 2)]
            self.calls.append(("batch", inner))
            results = [CommandResult(argv=a, exit_status=self.answers.get(tuple(a), (1, ""))[0],
                                     stdout=self.answers.get(tuple(a), (1, ""))[1], stderr="", duration_s=0.0)
                       for a in inner]
            return CommandResult(argv=argv, exit_status=0, stdout=batch.format_answers(nonce, results), stderr="",
                                 duration_s=0.0)
        self.calls.append(argv)
        status, stdout = self.answers.get(tuple(argv), (1, ""))
        if check and status:
            raise CommandFailed(argv, status, stdout, "")
        return CommandResult(argv=argv, exit_status=status, stdout=stdout, stderr="", duration_s=0.0)


def findmnt(path: str) -> tuple[str, ...]:
    return ("findmnt", "-n", "-o", "FSTYPE,TARGET", "-T", path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DEBIAN_OS_RELEASE, facts.OsRelease("debian", "", "12", "Debian GNU/Linux 12 (bookworm)")),
        (ROCKY_OS_RELEASE, facts.OsRelease("rocky", "rhel centos fedora", "9.3", "Rocky Linux 9.3 (Blue Onyx)")),
        ("NAME=Minimal\n", facts.OsRelease("", "", "", "Minimal")),
        ("", facts.OsRelease("", "", "", "")),
    ],
)
def test_parse_os_release(text, expected):
    assert facts.parse_os_release(text) == expected


def test_read_os_release_falls_back_to_usr_lib():
    session = FakeSession({("cat", "/usr/lib/os-release"): (0, DEBIAN_OS_RELEASE)})
    assert facts.read_os_release(session).id == "debian"
    assert session.calls == [["cat", "/etc/os-release"], ["cat", "/usr/lib/os-release"]]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("ext4   /\n", facts.StorageLocation("ext4", "/", False)),
        ("nfs4   /var/lib/libvirt/images\n", facts.StorageLocation("nfs4", "/var/lib/libvirt/images", True)),
        ("fuse.glusterfs /mnt/gv0\n", facts.StorageLocation("fuse.glusterfs", "/mnt/gv0", True)),
        ("ceph /mnt/cephfs\n", facts.StorageLocation("ceph", "/mnt/cephfs", True)),
        ("xfs /srv/my\\x20images\n", facts.StorageLocation("xfs", "/srv/my images", False)),
        ("zfs /tank/vms\n", facts.StorageLocation("zfs", "/tank/vms", False)),
        ("", None),
    ],
)
def test_parse_findmnt(output, expected):
    assert facts.parse_findmnt(output) == expected


MOUNTS = ("/ ext4\n/proc proc\n/var/lib/libvirt/images nfs4\n/srv/my\\x20images xfs\n"
          "/var/lib/libvirt/images fuse.glusterfs\n")
TABLE = ("findmnt", "-rn", "-o", "TARGET,FSTYPE")


def realpath(*paths: str) -> tuple[str, ...]:
    return ("realpath", "-mz", "--", *paths)


def test_parse_mount_table_unescapes_and_keeps_mount_order():
    assert facts.parse_mount_table(MOUNTS + "\n") == [
        ("/", "ext4"), ("/proc", "proc"), ("/var/lib/libvirt/images", "nfs4"), ("/srv/my images", "xfs"),
        ("/var/lib/libvirt/images", "fuse.glusterfs"),
    ]


@pytest.mark.parametrize(
    ("real", "expected"),
    [
        ("/var/lib/libvirt/images/a.qcow2", facts.StorageLocation("fuse.glusterfs", "/var/lib/libvirt/images", True)),
        ("/var/lib/libvirt/images", facts.StorageLocation("fuse.glusterfs", "/var/lib/libvirt/images", True)),
        ("/var/lib/libvirt/imagesX/a.qcow2", facts.StorageLocation("ext4", "/", False)),  # a prefix, not a parent
        ("/srv/my images/not/yet.qcow2", facts.StorageLocation("xfs", "/srv/my images", False)),
        ("/proc/self", facts.StorageLocation("proc", "/proc", False)),
        ("/", facts.StorageLocation("ext4", "/", False)),
    ],
)
def test_place_paths_takes_the_longest_mountpoint_and_the_top_mount_of_a_stack(real, expected):
    # The same mountpoint twice: the later mount (glusterfs, on top) holds the path, as findmnt -T says.
    table = facts.parse_mount_table(MOUNTS)
    assert facts.place_paths(table, {"/link/to/it": real}) == {"/link/to/it": expected}


def test_place_paths_leaves_out_a_path_under_no_mountpoint():
    assert facts.place_paths([("/srv", "xfs")], {"/etc/hosts": "/etc/hosts"}) == {}


def test_storage_kind_is_one_exec_whatever_the_number_of_paths():
    paths = [f"/var/lib/libvirt/images/g{i}.qcow2" for i in range(150)] + ["/srv/new/dir/b.qcow2"]
    session = FakeSession({TABLE: (0, MOUNTS), realpath(*paths): (0, "".join(p + "\0" for p in paths))})
    result = facts.storage_kind(session, paths)
    assert len(result) == 151 and result["/srv/new/dir/b.qcow2"] == facts.StorageLocation("ext4", "/", False)
    assert all(result[p].shared for p in paths[:150])
    assert session.calls == [("batch", [list(TABLE), list(realpath(*paths))])]


def test_storage_kind_follows_what_realpath_resolved():
    session = FakeSession({TABLE: (0, MOUNTS), realpath("/images/a.qcow2"): (0, "/var/lib/libvirt/images/a.qcow2\0")})
    assert facts.storage_kind(session, ["/images/a.qcow2"])["/images/a.qcow2"].shared


def test_storage_kind_without_realpath_asks_findmnt_path_by_path_and_walks_up_for_missing_paths():
    session = FakeSession(
        {
            TABLE: (0, MOUNTS),  # realpath: not found (1) — nothing of its answer is trusted
            findmnt("/var/lib/libvirt/images/a.qcow2"): (0, "nfs4   /var/lib/libvirt/images\n"),
            findmnt("/srv/new"): (0, "ext4 /\n"),
        }
    )
    result = facts.storage_kind(session, ["/var/lib/libvirt/images/a.qcow2", "/srv/new/dir/b.qcow2"])
    assert result == {
        "/var/lib/libvirt/images/a.qcow2": facts.StorageLocation("nfs4", "/var/lib/libvirt/images", True),
        "/srv/new/dir/b.qcow2": facts.StorageLocation("ext4", "/", False),
    }
    assert session.calls[1:] == [
        ("batch", [list(findmnt("/srv/new/dir/b.qcow2")), list(findmnt("/var/lib/libvirt/images/a.qcow2"))]),
        list(findmnt("/srv/new/dir")),  # one path left: asked alone
        list(findmnt("/srv/new")),
    ]


def test_storage_kind_distrusts_a_realpath_answer_that_misses_a_path():
    session = FakeSession({TABLE: (0, MOUNTS), realpath("/a", "/b"): (0, "/a\0"),
                           findmnt("/a"): (0, "ext4 /\n"), findmnt("/b"): (0, "nfs4 /b\n")})
    assert facts.storage_kind(session, ["/a", "/b"])["/b"].shared


def test_storage_kind_raises_when_findmnt_itself_fails():
    session = FakeSession({findmnt("/x"): (127, "")})
    with pytest.raises(CommandFailed):
        facts.storage_kind(session, ["/x"])


def test_probe_host_asks_os_release_and_every_path_in_one_exec():
    paths = ["/var/lib/libvirt/images/a.qcow2", "/srv/b.qcow2"]
    session = FakeSession({
        ("cat", "/etc/os-release"): (0, DEBIAN_OS_RELEASE),
        TABLE: (0, MOUNTS), realpath(*paths): (0, "".join(p + "\0" for p in paths)),
    })
    probe = facts.probe_host(session, paths)
    assert probe.os_release.id == "debian" and probe.os_release_error is None
    assert probe.storage == {
        "/var/lib/libvirt/images/a.qcow2": facts.StorageLocation("fuse.glusterfs", "/var/lib/libvirt/images", True),
        "/srv/b.qcow2": facts.StorageLocation("ext4", "/", False),
    }
    assert probe.storage_error is None
    assert session.calls == [("batch", [["cat", "/etc/os-release"], list(TABLE), list(realpath(*paths))])]


def test_probe_host_without_disks_is_one_command_and_falls_back_to_usr_lib():
    session = FakeSession({("cat", "/usr/lib/os-release"): (0, DEBIAN_OS_RELEASE)})
    probe = facts.probe_host(session, [])
    assert probe.os_release.id == "debian" and probe.storage == {}
    assert session.calls == [["cat", "/etc/os-release"], ["cat", "/usr/lib/os-release"]]


def test_probe_host_gives_each_part_its_own_error():
    # neither realpath nor findmnt on the host: the storage part fails, os-release still comes back.
    session = FakeSession({("cat", "/etc/os-release"): (0, DEBIAN_OS_RELEASE), findmnt("/x"): (127, "")})
    probe = facts.probe_host(session, ["/x"])
    assert probe.os_release.id == "debian"
    assert isinstance(probe.storage_error, CommandFailed) and probe.storage == {}
    # no os-release anywhere: the storage part still comes back.
    session = FakeSession({TABLE: (0, MOUNTS), realpath("/x"): (0, "/x\0")})
    probe = facts.probe_host(session, ["/x"])
    assert probe.os_release is None and isinstance(probe.os_release_error, CommandFailed)
    assert probe.storage == {"/x": facts.StorageLocation("ext4", "/", False)}


def test_resolve_names_uses_getent_on_the_host(monkeypatch):
    monkeypatch.setattr(facts.secrets, "token_hex", lambda n: "N0")
    answer = ("10.77.0.12      STREAM labh2\n10.77.0.12      DGRAM  \n10.77.0.12      RAW    \n"
              "fd00::12        STREAM \n")
    one = FakeSession({("getent", "ahosts", "labh2"): (0, answer)})
    assert facts.resolve_names(one, ["labh2"]) == {"labh2": ["10.77.0.12", "fd00::12"]}
    assert one.calls == [["getent", "ahosts", "labh2"]]
    # Several names: one command; a forged "N0" line inside an answer is not a separator unless it ends it.
    many = FakeSession({("sh", "-c", facts.RESOLVE_SH, "resolve", "N0", "labh2", "nowhere"): (
        0, answer + "N0 0\nN0 2\n")})
    assert facts.resolve_names(many, ["labh2", "nowhere"]) == {"labh2": ["10.77.0.12", "fd00::12"], "nowhere": []}
    assert len(many.calls) == 1
    broken = FakeSession({("sh", "-c", facts.RESOLVE_SH, "resolve", "N0", "a", "b"): (0, "N0 0\n")})
    with pytest.raises(CommandFailed):
        facts.resolve_names(broken, ["a", "b"])  # an answer missing: not "cannot resolve"


def test_real_commands_through_ssh(ssh_server, client_keypair, tmp_path):
    """The in-process server runs the commands on this machine, like sshd would."""
    target = SSHTarget(
        address="127.0.0.1", port=ssh_server.port, private_key_pem=client_keypair[0],
        pinned_host_key=ssh_server.host_key.openssh,
    )
    with SSHSession(target) as session:
        release = facts.read_os_release(session)
        storage = facts.storage_kind(session, ["/proc/self", str(tmp_path / "not" / "there.qcow2")])
        names = facts.resolve_names(session, ["localhost", "no-such-name.invalid"])
    if os.path.exists("/etc/os-release"):
        assert release.id and release.pretty_name
    assert storage["/proc/self"] == facts.StorageLocation("proc", "/proc", False)
    assert storage[str(tmp_path / "not" / "there.qcow2")].mountpoint.startswith("/")
    assert "127.0.0.1" in names["localhost"] or "::1" in names["localhost"]
    assert names["no-such-name.invalid"] == []
