"""hosts.adapters.facts: parsers, the exact commands, and a real run through SSH."""

from __future__ import annotations

import os

import pytest

from hosts.adapters import facts
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


def test_storage_kind_runs_findmnt_per_path_and_walks_up_for_missing_paths():
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
        list(findmnt("/var/lib/libvirt/images/a.qcow2")),
        list(findmnt("/srv/new/dir/b.qcow2")),
        list(findmnt("/srv/new/dir")),
        list(findmnt("/srv/new")),
    ]


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
