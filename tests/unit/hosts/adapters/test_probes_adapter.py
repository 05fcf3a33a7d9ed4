"""hosts.adapters.probes: the parsers (pure), and the remote snippets run for real on this machine.

The fake fleet only models the snippets' output (tests/fakes/shell.py); these tests run the
shell and Python text itself, so the fake cannot drift from what the hosts really run.
"""

from __future__ import annotations

import hashlib
import dataclasses
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from hosts.adapters import probes as P

# --- pure parsing ------------------------------------------------------------------


# What grep finds in Debian 12's /etc/libvirt/qemu.conf.
DEBIAN_QEMU_CONF = """#       user = "qemu"   # A user named "qemu"
#       user = "+0"     # Super user (uid=0)
#       user = "100"    # A user named "100" or a user with uid=100
#user = "libvirt-qemu"
#group = "libvirt-qemu"
#dynamic_ownership = 1
"""


@pytest.mark.parametrize(
    ("text", "default", "user", "group", "dynamic"),
    [
        ('user = "root"\ngroup = "root"\n', None, "root", "root", True),
        ('#user = "libvirt-qemu"\n#group = "libvirt-qemu"\n', None, "libvirt-qemu", "libvirt-qemu", True),
        ('user = "a"\nuser = "b"\n', None, "a", None, True),  # libvirt reads the first
        (DEBIAN_QEMU_CONF, None, "libvirt-qemu", "libvirt-qemu", True),  # examples are not the default
        (DEBIAN_QEMU_CONF + 'user = "root"\ngroup = "root"\ndynamic_ownership = 0\n', None, "root", "root", False),
        ('  user="qemu"  # comment\ndynamic_ownership = 0\n', None, "qemu", None, False),
        ('user = "+107"\ngroup = "+107"\n', None, "+107", "+107", True),
        ("", "libvirt-qemu", "libvirt-qemu", None, True),
        ("", None, "qemu", None, True),
    ],
)
def test_parse_qemu_conf(text, default, user, group, dynamic):
    got = P.parse_qemu_conf(text, distro_default_user=default)
    assert (got.user, got.group, got.dynamic_ownership) == (user, group, dynamic)


def test_runas_argv():
    assert P.QemuIdentity("qemu", "qemu", True).runas_argv() == ["runuser", "-u", "qemu", "--"]
    assert P.QemuIdentity("+107", "+36", True).runas_argv() == [
        "setpriv", "--reuid=107", "--regid=36", "--clear-groups", "--"]


def test_distro_default_user():
    from hosts.adapters.facts import OsRelease

    assert P.distro_qemu_user(OsRelease("ubuntu", "debian", "24.04", "")) == "libvirt-qemu"
    assert P.distro_qemu_user(OsRelease("rocky", "rhel centos fedora", "9", "")) == "qemu"
    assert P.distro_qemu_user(OsRelease("opensuse-leap", "suse opensuse", "15", "")) == "qemu"


@pytest.mark.parametrize(
    ("status", "stderr", "outcome"),
    [
        (0, "", "open"),
        (1, "bash: connect: Connection refused\n", "refused"),
        (124, "", "timeout"),
        (1, "bash: connect: No route to host\n", "unreachable"),
        (1, "bash: kvm-b: Name or service not known\n", "unreachable"),
        (127, "timeout: failed to run command 'bash'", None),
        (1, "something else", None),
    ],
)
def test_classify_connect(status, stderr, outcome):
    assert P.classify_connect(status, stderr) == outcome


# --- the remote snippets, run for real on this machine ---------------------------


def sh(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=20)


def test_script_marker_and_disk_probe(tmp_path):
    directory = tmp_path / "it's a $(dir)"
    directory.mkdir()
    image = directory / "web.qcow2"
    image.write_text("x")
    image.chmod(0o640)
    made = sh(["sh", "-c", P.MARKER_SH, "marker", str(directory), P.MARKER_PREFIX], stdin="tok123")
    assert made.returncode == 0, made.stderr
    marker = made.stdout
    assert marker.startswith(f"{directory}/{P.MARKER_PREFIX}") and open(marker).read() == "tok123"
    me = ["env", "--"]  # "as QEMU's user" = as ourselves here
    probe = P.parse_disk_probe(sh(["sh", "-c", P.DISK_PROBE_SH, "p", marker, str(image), "1", "1", *me]).stdout)
    assert probe.marker == "tok123" and probe.exists
    assert probe.qemu_read is True and probe.qemu_write is True and probe.qemu_reaches_dir is True
    assert probe.perm.endswith(" 640") and probe.room_kib and probe.room_kib > 0
    sh(["rm", "-f", "--", marker])
    missing = P.parse_disk_probe(sh(["sh", "-c", P.DISK_PROBE_SH, "p", marker, str(tmp_path / "nope"), "0", "0", *me]).stdout)
    assert missing.marker == "-" and not missing.exists and missing.room_kib is None


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="runuser needs root")
def test_script_disk_probe_as_another_user(tmp_path):
    image = tmp_path / "secret.img"
    image.write_text("x")
    image.chmod(0o600)
    tmp_path.chmod(0o755)
    out = sh(["sh", "-c", P.DISK_PROBE_SH, "p", "", str(image), "1", "0", "runuser", "-u", "nobody", "--"]).stdout
    probe = P.parse_disk_probe(out)
    assert probe.qemu_read is False and probe.root_read is True
    assert P.can_open(probe, writable=True, identity=P.QemuIdentity("nobody", None, False)) == (
        False, f"{probe.perm}, as nobody")
    unknown = sh(["sh", "-c", P.DISK_PROBE_SH, "p", "", str(image), "0", "0", "runuser", "-u", "no-such-user-x", "--"])
    assert P.parse_disk_probe(unknown.stdout).qemu_read is None  # runuser complained: could not verify


def test_script_digest(tmp_path):
    f = tmp_path / "a.iso"
    f.write_bytes(b"abc")
    out = sh(["sh", "-c", P.DIGEST_SH, "d", str(f), "100"]).stdout.split()
    assert out == ["3", hashlib.sha256(b"abc").hexdigest()]
    assert sh(["sh", "-c", P.DIGEST_SH, "d", str(f), "2"]).stdout.split() == ["3", "-"]


def test_script_digests_many_files_at_once(tmp_path):
    small, big, odd = tmp_path / "a.iso", tmp_path / "b.iso", tmp_path / "it's\nodd $(x).iso"
    small.write_bytes(b"abc")
    big.write_bytes(b"x" * 50)
    odd.write_bytes(b"odd")
    paths = [str(small), str(tmp_path / "missing.iso"), str(big), str(odd)]
    out = sh(["sh", "-c", P.DIGESTS_SH, "d", "10", *paths])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"0 3 {hashlib.sha256(b'abc').hexdigest()}", "1 -", "2 50 -", f"3 3 {hashlib.sha256(b'odd').hexdigest()}",
    ]


def test_content_digests_reads_one_line_per_path_and_rejects_forgeries():
    class Session:
        target = None

        def __init__(self, stdout):
            self.stdout, self.argv = stdout, None

        def run(self, argv, **kw):
            self.argv = argv
            return type("R", (), {"stdout": self.stdout, "exit_status": 0, "stderr": ""})()

    good = "a" * 64
    s = Session(f"0 3 {good}\n1 -\n2 9 -\n7 1 {good}\n0 x {good}\n2 5 not-a-hash\n")
    assert P.content_digests(s, ["/a", "/b", "/c"]) == {"/a": (3, good), "/b": None, "/c": (9, "-")}
    assert s.argv[:3] == ["sh", "-c", P.DIGESTS_SH]


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_script_listener_is_one_shot_and_returns_at_once():
    started = time.monotonic()
    made = sh(["timeout", "5", sys.executable, "-c", P.LISTENER_PY, "49152", "49215", "3"])
    assert made.returncode == 0, made.stderr
    assert time.monotonic() - started < 2.5  # the listener went to the background
    port = int(made.stdout)
    assert P.MIGRATION_PORT_MIN <= port <= P.MIGRATION_PORT_MAX
    first = sh(["timeout", "3", "bash", "-c", P.CONNECT_SH, "c", "127.0.0.1", str(port)])
    assert P.classify_connect(first.returncode, first.stderr) == "open"
    # One-shot: once it has served that connection it closes (wait for that, with a deadline).
    deadline = time.monotonic() + 3
    while True:
        again = sh(["timeout", "3", "bash", "-c", P.CONNECT_SH, "c", "127.0.0.1", str(port)])
        if P.classify_connect(again.returncode, again.stderr) == "refused" or time.monotonic() > deadline:
            break
    assert P.classify_connect(again.returncode, again.stderr) == "refused"


def test_script_listener_skips_busy_ports():
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("0.0.0.0", 0))
    port = busy.getsockname()[1]
    busy.listen(1)
    try:
        made = sh(["timeout", "5", sys.executable, "-c", P.LISTENER_PY, str(port), str(port), "1"])
        assert made.returncode == 3 and made.stdout == ""
    finally:
        busy.close()


def test_script_markers_and_disk_probes_many_at_once(tmp_path):
    shared, other = tmp_path / "it's $(shared)", tmp_path / "other"
    shared.mkdir()
    other.mkdir()
    image = shared / "web.qcow2"
    image.write_text("x")
    made = sh(["sh", "-c", P.MARKERS_SH, "markers", P.MARKER_PREFIX, str(shared), str(tmp_path / "nope"), str(other)],
              stdin="tok123")
    paths = made.stdout.split("\0")
    assert paths[1] == "" and paths[0].startswith(f"{shared}/{P.MARKER_PREFIX}") and open(paths[0]).read() == "tok123"
    assert paths[2].startswith(f"{other}/{P.MARKER_PREFIX}")
    # A marker whose content tries to pose as another disk's answer.
    (other / "trap").write_text("n0nce:1\nitem=n0nce:1\nexists=1\n")
    me = ["env", "--"]
    out = sh(["bash", "-c", P.DISK_PROBES_BASH, "p", "n0nce", str(len(me)), *me,
              paths[0], str(image), "1", "1", str(other / "trap"), str(tmp_path / "missing"), "0", "0"])
    assert out.returncode == 0, out.stderr
    first, second = P.parse_disk_probes(out.stdout, "n0nce", 2)
    assert first.marker == "tok123" and first.exists and first.qemu_write is True and first.room_kib
    assert not second.exists  # the forged lines come before the real answer, and later keys win
    assert P.parse_disk_probes(out.stdout, "other", 2) == [None, None]


def test_parse_disk_probes_ignores_headers_of_another_nonce_or_index():
    out = "item=abc:0\nexists=0\nitem=abc:7\nexists=1\nitem=xyz:1\nexists=1\n"
    (only, missing) = P.parse_disk_probes(out, "abc", 2)
    assert only.exists is True and missing is None  # unknown headers are content of the current item; later keys win


@pytest.mark.parametrize("runas", [
    ["env", "--"],  # QEMU's user can open what we can
    ["false"],  # no QEMU user known: every test as QEMU's user fails
    ["sh", "-c", "echo 'runuser: user libvirt-qemu does not exist' >&2; exit 1", "prefix"],  # the prefix fails
])
def test_script_disk_probes_answer_as_one_probe_per_disk_would(tmp_path, runas):
    rw, ro = tmp_path / "rw.qcow2", tmp_path / "ro.iso"
    rw.write_text("x")
    ro.write_text("y")
    ro.chmod(0o444)
    marker = tmp_path / "marker"
    marker.write_text("tok")
    queries = [
        P.DiskQuery(path=str(rw), marker=str(marker), writable=True, room=True),
        P.DiskQuery(path=str(ro), marker=None, writable=False, room=False),
        P.DiskQuery(path=str(tmp_path / "gone.qcow2"), marker=str(tmp_path / "nomarker"), writable=True, room=True),
    ]
    singles = []
    for q in queries:
        out = sh(["sh", "-c", P.DISK_PROBE_SH, "disk-probe", q.marker or "", q.path, "1" if q.writable else "0",
                  "1" if q.room else "0", *runas])
        singles.append(P.parse_disk_probe(out.stdout))
    items = [a for q in queries for a in (q.marker or "", q.path, "1" if q.writable else "0", "1" if q.room else "0")]
    out = sh(["bash", "-c", P.DISK_PROBES_BASH, "p", "n0nce", str(len(runas)), *runas, *items])
    assert out.returncode == 0, out.stderr
    batch = P.parse_disk_probes(out.stdout, "n0nce", len(queries))
    assert batch[0].room_kib and singles[0].room_kib  # measured; its value moves as the disk fills
    unroomed = [dataclasses.replace(p, room_kib=None) for p in batch]
    assert unroomed == [dataclasses.replace(p, room_kib=None) for p in singles]


def test_script_qemu_identity_reads_conf_lines_and_os_release_in_one_command():
    out = sh(["sh", "-c", P.QEMU_IDENTITY_SH, "qemu-identity", P.QEMU_CONF_PATTERN, "n0nce"])
    assert out.returncode == 0, out.stderr
    conf, sep, rest = out.stdout.partition("\nn0nce ")
    status, _, os_text = rest.partition("\n")
    assert sep and status in ("0", "1", "2")  # 2: this machine has no qemu.conf
    assert all(re.search(r"(user|group|dynamic_ownership)\s*=", line) for line in conf.splitlines())
    assert "ID=" in os_text


@pytest.mark.parametrize("stdout, user", [
    ('user = "qemu"\ngroup = "qemu"\n\nN 0\nID=debian\n', "qemu"),  # set in qemu.conf
    ('\nN 1\nID=debian\n', "libvirt-qemu"),  # nothing set: Debian's default
    ('\nN 2\nID=fedora\n', "qemu"),  # no qemu.conf: Fedora's default
])
def test_qemu_identity_from_one_command(monkeypatch, stdout, user):
    monkeypatch.setattr(P.secrets, "token_hex", lambda n: "N")

    class Session:
        target = None

        def run(self, argv, **kw):
            return type("R", (), {"stdout": stdout, "exit_status": 0, "stderr": "", "argv": argv})()

    assert P.qemu_identity(Session()).user == user


def test_qemu_identity_that_grep_could_not_read_is_an_error(monkeypatch):
    monkeypatch.setattr(P.secrets, "token_hex", lambda n: "N")

    class Session:
        target = None

        def run(self, argv, **kw):
            return type("R", (), {"stdout": "\nN 13\nID=debian\n", "exit_status": 0, "stderr": "", "argv": argv})()

    with pytest.raises(P.CommandFailed):
        P.qemu_identity(Session())


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_script_connects_tries_every_target_side_by_side():
    import socket

    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen(4)
        closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
        step = P.connects_step([("127.0.0.1", listening.getsockname()[1]), ("127.0.0.1", closed.getsockname()[1]),
                                ("it's $(x)", 22)])
        out = sh(step.argv)
    assert out.returncode == 0, out.stderr
    found = step.parse(type("R", (), {"stdout": out.stdout, "exit_status": 0, "stderr": ""})())
    assert found[:2] == ["open", "refused"]
    assert found[2] in ("unreachable", None)  # a hostile name is one argument, never run


@pytest.mark.parametrize("output, count, found", [
    ("0 0 \n1 1 bash: connect: Connection refused \n", 2, ["open", "refused"]),
    ("1 124 \n", 2, [None, "timeout"]),  # an attempt it did not report: could not verify
    ("0 0\n9 0 \nx 0 \n0 x \n", 1, ["open"]),  # lines out of range or malformed are ignored
    ("", 1, [None]),
])
def test_parse_connects(output, count, found):
    assert P.parse_connects(output, count) == found
