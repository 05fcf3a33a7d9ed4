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


def test_storage_kind_asks_every_path_in_one_exec_and_walks_up_for_missing_paths():
    session = FakeSession(
        {
            findmnt("/var/lib/libvirt/images/a.qcow2"): (0, "nfs4   /var/lib/libvirt/images\n"),
            findmnt("/srv/new"): (0, "ext4 /\n"),
        }
    )
    result = facts.storage_kind(session, ["/var/lib/libvirt/images/a.qcow2", "/srv/new/dir/b.qcow2"])
    assert result == {
        "/var/lib/libvirt/images/a.qcow2": facts.StorageLocation("nfs4", "/var/lib/libvirt/images", True),
        "/srv/new/dir/b.qcow2": facts.StorageLocation("ext4", "/", False),
    }
    assert session.calls == [
        ("batch", [list(findmnt("/srv/new/dir/b.qcow2")), list(findmnt("/var/lib/libvirt/images/a.qcow2"))]),
        list(findmnt("/srv/new/dir")),  # one path left: asked alone
        list(findmnt("/srv/new")),
    ]


def test_storage_kind_asks_a_directory_shared_by_many_disks_once_and_any_number_of_paths_in_few_execs():
    paths = [f"/var/lib/libvirt/images/g{i}.qcow2" for i in range(150)] + ["/var/lib/libvirt/images/g0.qcow2"]
    session = FakeSession({findmnt(p): (0, "nfs4 /var/lib/libvirt/images\n") for p in paths})
    result = facts.storage_kind(session, paths)
    assert len(result) == 150 and all(loc.shared for loc in result.values())
    sizes = [len(call[1]) for call in session.calls]
    assert sizes == [64, 64, 22]  # batches of at most batch.MAX_COMMANDS, each path once


def test_storage_kind_raises_when_findmnt_itself_fails():
    session = FakeSession({findmnt("/x"): (127, "")})
    with pytest.raises(CommandFailed):
        facts.storage_kind(session, ["/x"])


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
