"""hosts.adapters.images: parsers, the exact argv of every command, what a failed copy says,
and the constant scripts run for real on this machine with hostile file names."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import time
from types import SimpleNamespace

import pytest

from hosts.adapters import images
from hosts.adapters.errors import AdapterError, CommandFailed
from hosts.adapters.ssh import CommandResult, RelayResult

RUNAS = ["runuser", "-u", "libvirt-qemu", "--"]
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
HOSTILE = [
    "/var/lib/libvirt/images/my disk.qcow2",
    "/var/lib/libvirt/images/it's \"quoted\".qcow2",
    "/var/lib/libvirt/images/a;rm -rf /;.qcow2",
    "/var/lib/libvirt/images/$(touch /tmp/pwned)`id`.qcow2",
    "/var/lib/libvirt/images/new\nline|&>x.qcow2",
]
SCRIPTS = (images.COPY_ON_HOST_SH, images.WRITE_STDIN_SH, images.DIGEST_SH)


def result(argv, status=0, stdout="", stderr="", duration=0.0) -> CommandResult:
    return CommandResult(argv=list(argv), exit_status=status, stdout=stdout, stderr=stderr, duration_s=duration)


class FakeSession:
    """Records every argv; answers from ``answer(argv) -> (status, stdout, stderr)``.

    Like SSHSession.run it insists on a list of strings, raises CommandFailed when ``check``
    is true and the status is not 0, and feeds stderr to ``on_stderr`` (in ``stderr_pieces``).
    """

    def __init__(self, answer=None, *, address="192.0.2.10", stderr_pieces=()):
        self.answer = answer or (lambda argv: (0, "", ""))
        self.target = SimpleNamespace(address=address)
        self.stderr_pieces = list(stderr_pieces)
        self.calls: list[list[str]] = []
        self.kwargs: list[dict] = []

    def run(self, argv, *, timeout=30.0, check=True, stdin=None, on_stderr=None):
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), argv
        self.calls.append(argv)
        self.kwargs.append({"timeout": timeout, "check": check, "on_stderr": on_stderr})
        status, stdout, stderr = self.answer(argv)
        if on_stderr is not None:
            for piece in self.stderr_pieces:
                on_stderr(piece)
        if check and status:
            raise CommandFailed(argv, status, stdout, stderr)
        return result(argv, status, stdout, stderr, duration=2.5)


def stat_argv(path):
    return ["stat", "-L", "-c", "%s %U %G %a", "--", path]


def assert_path_is_one_literal_argument(argv, path):
    assert argv.count(path) == 1, argv
    assert not any(path in script for script in SCRIPTS)
    # What the remote shell parses back out of SSHSession.run's command line is the same argv.
    assert shlex.split(shlex.join(argv)) == argv


# --------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    "chunk, expected",
    [
        (b"1048576 bytes (1.0 MB, 1.0 MiB) copied, 1 s, 1.0 MB/s", 1048576),
        (b"1048576 bytes (1.0 MB, 1.0 MiB) copied, 1 s, 1 MB/s\r2097152 bytes (2.1 MB, 2.0 MiB) copied, 2 s, 1 MB/s",
         2097152),
        (b"4+0 records in\n4+0 records out\n16777216 bytes (17 MB, 16 MiB) copied, 0.05 s, 335 MB/s\n", 16777216),
        (b"4+0 records in\n", None),
        (b"dd: error writing '/mnt/vm/x': No space left on device\n", None),
        (b"", None),
    ],
)
def test_parse_dd_progress(chunk, expected):
    assert images.parse_dd_progress(chunk) == expected


QEMU_IMG_OVERLAY = json.dumps({
    "virtual-size": 10737418240, "filename": "/images/web-1.qcow2", "format": "qcow2", "actual-size": 200704,
    "backing-filename": "base.qcow2", "full-backing-filename": "/images/base.qcow2", "dirty-flag": False,
})


@pytest.mark.parametrize(
    "text, expected",
    [
        (QEMU_IMG_OVERLAY, images.ImageFacts("/p", "qcow2", 10737418240, 200704, "/images/base.qcow2")),
        (json.dumps({"format": "qcow2", "virtual-size": 5, "actual-size": 3, "backing-filename": "base.qcow2"}),
         images.ImageFacts("/p", "qcow2", 5, 3, "base.qcow2")),
        (json.dumps({"format": "raw", "virtual-size": 1048576, "actual-size": 4096}),
         images.ImageFacts("/p", "raw", 1048576, 4096, None)),
        (json.dumps({"format": "qcow2", "virtual-size": 1, "actual-size": 1, "backing-filename": ""}),
         images.ImageFacts("/p", "qcow2", 1, 1, None)),
        ("{}", images.ImageFacts("/p", "", 0, 0, None)),
    ],
)
def test_parse_image_info(text, expected):
    assert images.parse_image_info("/p", text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1073741824 libvirt-qemu kvm 600\n", images.FileFacts("/p", 1073741824, "libvirt-qemu", "kvm", "600")),
        ("0 root root 644", images.FileFacts("/p", 0, "root", "root", "644")),
        ("", None),
        ("stat: cannot statx '/p': No such file or directory", None),
        ("big root root 600", None),
        ("12 root 600", None),
    ],
)
def test_parse_stat(text, expected):
    assert images.parse_stat("/p", text) == expected


def test_file_facts_perm_reads_like_ls():
    assert images.FileFacts("/p", 1, "qemu", "qemu", "660").perm == "qemu:qemu 660"


# --------------------------------------------------------------------------- facts


@pytest.mark.parametrize("path", HOSTILE)
def test_image_facts_asks_qemu_img_without_taking_the_lock(path):
    session = FakeSession(lambda argv: (0, QEMU_IMG_OVERLAY, ""))
    facts = images.image_facts(session, path)
    assert session.calls == [["qemu-img", "info", "-U", "--output=json", path]]
    assert facts.path == path and facts.backing == "/images/base.qcow2"


@pytest.mark.parametrize("stdout", ["", "qemu-img: Could not open", '{"virtual-size": "lots"}'])
def test_image_facts_turns_unreadable_output_into_an_adapter_error(stdout):
    session = FakeSession(lambda argv: (0, stdout, ""))
    with pytest.raises(AdapterError, match="qemu-img info gave unreadable output for /images/x.qcow2"):
        images.image_facts(session, "/images/x.qcow2")


def test_image_facts_lets_a_failed_command_raise():
    session = FakeSession(lambda argv: (1, "", "qemu-img: Could not open '/x': No such file or directory"))
    with pytest.raises(CommandFailed, match="No such file"):
        images.image_facts(session, "/x")


def test_file_facts_stats_the_target_of_links_and_is_none_when_missing():
    session = FakeSession(lambda argv: (0, "42 root root 600\n", ""))
    assert images.file_facts(session, HOSTILE[3]) == images.FileFacts(HOSTILE[3], 42, "root", "root", "600")
    assert session.calls == [stat_argv(HOSTILE[3])]
    missing = FakeSession(lambda argv: (1, "", "stat: cannot statx: No such file or directory"))
    assert images.file_facts(missing, "/nope") is None


@pytest.mark.parametrize(
    "status, stdout, expected",
    [
        (0, "    Avail\n53687091200\n", 53687091200),
        (0, "Avail\n0\n", 0),
        (1, "", None),
        (0, "Avail\n", None),
        (0, "Avail\n-\n", None),
        (1, "Avail\n123\n", None),
    ],
)
def test_free_bytes(status, stdout, expected):
    session = FakeSession(lambda argv: (status, stdout, ""))
    assert images.free_bytes(session, "/mnt/my share") == expected
    assert session.calls == [["df", "-B1", "--output=avail", "--", "/mnt/my share"]]


@pytest.mark.parametrize("status, expected", [(0, True), (1, False)])
def test_can_write_dir_asks_as_qemus_user(status, expected):
    session = FakeSession(lambda argv: (status, "", ""))
    assert images.can_write_dir(session, "/mnt/vm", RUNAS) is expected
    assert session.calls == [[*RUNAS, "test", "-d", "/mnt/vm", "-a", "-w", "/mnt/vm", "-a", "-x", "/mnt/vm"]]


@pytest.mark.parametrize(
    "runas, writable, argv",
    [
        (RUNAS, True, [*RUNAS, "test", "-r", "/mnt/vm/a b.qcow2", "-a", "-w", "/mnt/vm/a b.qcow2"]),
        (RUNAS, False, [*RUNAS, "test", "-r", "/mnt/vm/a b.qcow2"]),
        ([], False, ["test", "-r", "/mnt/vm/a b.qcow2"]),
    ],
)
def test_can_open(runas, writable, argv):
    session = FakeSession()
    assert images.can_open(session, "/mnt/vm/a b.qcow2", runas, writable=writable) is True
    assert session.calls == [argv]
    refused = FakeSession(lambda argv: (1, "", ""))
    assert images.can_open(refused, "/mnt/vm/a b.qcow2", runas, writable=writable) is False


@pytest.mark.parametrize("status, expected", [(0, True), (1, False)])
def test_path_exists(status, expected):
    session = FakeSession(lambda argv: (status, "", ""))
    assert images.path_exists(session, HOSTILE[2]) is expected
    assert session.calls == [["test", "-e", HOSTILE[2]]]


# --------------------------------------------------------------------------- checksums, owners, removal


@pytest.mark.parametrize("path", HOSTILE)
def test_sha256_passes_the_path_as_an_argument_of_a_constant_script(path):
    session = FakeSession(lambda argv: (0, SHA + "\n", ""))
    assert images.sha256(session, path, runas=RUNAS) == SHA
    [argv] = session.calls
    assert argv == ["sh", "-c", images.DIGEST_SH, "digest", path, *RUNAS]
    assert_path_is_one_literal_argument(argv, path)


@pytest.mark.parametrize("stdout", ["", "sha256sum: /x: Permission denied", SHA.upper(), SHA[:-1], SHA + "0"])
def test_sha256_refuses_anything_but_a_digest(stdout):
    session = FakeSession(lambda argv: (0, stdout, ""))
    with pytest.raises(AdapterError, match="sha256sum of /x gave"):
        images.sha256(session, "/x")


def test_sha256_of_an_unreadable_file_raises():
    session = FakeSession(lambda argv: (1, "", "sha256sum: /x: Permission denied"))
    with pytest.raises(CommandFailed, match="Permission denied"):
        images.sha256(session, "/x")


@pytest.mark.parametrize(
    "group, owner",
    [("kvm", "libvirt-qemu:kvm"), (None, "libvirt-qemu")],
)
def test_set_owner_mode_chowns_chmods_and_reads_back(group, owner):
    path = HOSTILE[1]
    session = FakeSession(lambda argv: (0, "42 libvirt-qemu kvm 600\n", "") if argv[0] == "stat" else (0, "", ""))
    facts = images.set_owner_mode(session, path, user="libvirt-qemu", group=group, mode="0600")
    assert session.calls == [["chown", "--", owner, path], ["chmod", "--", "0600", path], stat_argv(path)]
    assert facts.perm == "libvirt-qemu:kvm 600"


def test_set_owner_mode_raises_when_chown_is_refused():
    session = FakeSession(lambda argv: (1, "", "chown: changing ownership of '/mnt/vm/x': Operation not permitted"))
    with pytest.raises(CommandFailed, match="Operation not permitted"):
        images.set_owner_mode(session, "/mnt/vm/x", user="qemu", group="qemu", mode="0600")
    assert len(session.calls) == 1  # no chmod after a failed chown


def test_set_owner_mode_raises_when_the_file_vanished():
    session = FakeSession(lambda argv: (1, "", "") if argv[0] == "stat" else (0, "", ""))
    with pytest.raises(AdapterError, match="/mnt/vm/x vanished"):
        images.set_owner_mode(session, "/mnt/vm/x", user="qemu", group="qemu", mode="0600")


@pytest.mark.parametrize(
    "runas, statuses, expected, calls",
    [
        (RUNAS, [0], True, [[*RUNAS, "rm", "-f", "--", "/mnt/vm/x y"]]),
        # root_squash may refuse QEMU's user nothing it may do as root: then try as root.
        (RUNAS, [1, 0], True, [[*RUNAS, "rm", "-f", "--", "/mnt/vm/x y"], ["rm", "-f", "--", "/mnt/vm/x y"]]),
        (RUNAS, [1, 1], False, [[*RUNAS, "rm", "-f", "--", "/mnt/vm/x y"], ["rm", "-f", "--", "/mnt/vm/x y"]]),
        ([], [0], True, [["rm", "-f", "--", "/mnt/vm/x y"]]),
        ([], [1], False, [["rm", "-f", "--", "/mnt/vm/x y"]]),  # as root already: no second try
    ],
)
def test_remove_file(runas, statuses, expected, calls):
    answers = iter(statuses)
    session = FakeSession(lambda argv: (next(answers), "", ""))
    assert images.remove_file(session, "/mnt/vm/x y", runas=runas) is expected
    assert session.calls == calls


# --------------------------------------------------------------------------- copy on one host


def copy_answer(status=0, stderr="", size="16777216"):
    def answer(argv):
        if argv[0] == "bash":
            return status, "", stderr
        return (0, f"{size} libvirt-qemu kvm 600\n", "") if argv[0] == "stat" else (0, "", "")
    return answer


@pytest.mark.parametrize("path", HOSTILE)
def test_copy_on_host_passes_paths_as_arguments_and_reports_bytes(path):
    destination = "/mnt/vm/" + path.rsplit("/", 1)[1]
    seen = []
    session = FakeSession(copy_answer(), stderr_pieces=[
        b"4194304 bytes (4.2 MB, 4.0 MiB) copied, 1 s, 4.2 MB/s\r",
        b"4+0 records in\n",  # no count in it: not reported
        b"8388608 bytes (8.4 MB, 8.0 MiB) copied, 2 s, 4.2 MB/s\r16777216 bytes (17 MB, 16 MiB) copied, 3 s\r",
    ])
    copied = images.copy_on_host(session, path, destination, runas=RUNAS, on_bytes=seen.append, timeout=600)
    argv = session.calls[0]
    assert argv == ["bash", "-c", images.COPY_ON_HOST_SH, "copy", path, destination, *RUNAS]
    assert_path_is_one_literal_argument(argv, path)
    assert_path_is_one_literal_argument(argv, destination)
    assert session.kwargs[0]["check"] is False and session.kwargs[0]["timeout"] == 600
    assert seen == [4194304, 16777216]
    assert session.calls[1] == stat_argv(destination)  # the size is what arrived, not what was asked
    assert copied == images.CopyResult(bytes=16777216, seconds=2.5)


def test_copy_on_host_without_a_progress_callback():
    session = FakeSession(copy_answer(), stderr_pieces=[b"1 bytes copied"])
    assert images.copy_on_host(session, "/a", "/b", timeout=60).bytes == 16777216


@pytest.mark.parametrize(
    "status, stderr, message_has, hint_has",
    [
        (17, "dd: failed to open '/mnt/vm/web-1.qcow2': File exists\n",
         "(exit 17): dd: failed to open '/mnt/vm/web-1.qcow2': File exists", "already there"),
        (1, "1048576 bytes (1.0 MB, 1.0 MiB) copied, 1 s, 1 MB/s\r"
            "dd: error writing '/mnt/vm/web-1.qcow2': No space left on device\n"
            "3+0 records in\n2+0 records out\n2097152 bytes (2.1 MB, 2.0 MiB) copied, 1.2 s, 1.7 MB/s\n",
         "(exit 1): dd: error writing '/mnt/vm/web-1.qcow2': No space left on device", "The destination is full"),
        (1, "dd: failed to open '/mnt/vm/web-1.qcow2': Permission denied\n",
         "Permission denied", "root_squash the export directory must belong to QEMU's user"),
        (2, "cannot read /images/web-1.qcow2: No such file or permission denied\n",
         "(exit 2): cannot read /images/web-1.qcow2", "root_squash"),  # "permission denied", any case
        (1, "dd: /images/web-1.qcow2: Input/output error\n", "Input/output error", ""),
        (1, "", "no error output", ""),
    ],
)
def test_copy_on_host_failure_says_what_failed_and_what_to_do(status, stderr, message_has, hint_has):
    session = FakeSession(copy_answer(status, stderr), address="192.0.2.11")
    with pytest.raises(images.CopyFailed) as failed:
        images.copy_on_host(session, "/images/web-1.qcow2", "/mnt/vm/web-1.qcow2", timeout=60)
    assert failed.value.message.startswith("Copying /images/web-1.qcow2 to /mnt/vm/web-1.qcow2 on 192.0.2.11 failed")
    assert message_has in failed.value.message
    assert hint_has in failed.value.hint if hint_has else failed.value.hint == ""
    assert len(session.calls) == 1  # no stat of a copy that failed


# --------------------------------------------------------------------------- copy between hosts


class FakeRelay:
    def __init__(self, source_status=0, destination_status=0, stderr="", moved=16777216):
        self.source_status, self.destination_status = source_status, destination_status
        self.stderr, self.moved = stderr, moved
        self.calls = []

    def __call__(self, source, source_argv, destination, destination_argv, *, timeout, on_bytes=None):
        self.calls.append(SimpleNamespace(source=source, source_argv=source_argv, destination=destination,
                                          destination_argv=destination_argv, timeout=timeout, on_bytes=on_bytes))
        if on_bytes is not None:
            on_bytes(self.moved)
        src_err = self.stderr if self.source_status else ""
        dst_err = self.stderr if self.destination_status else ""
        return RelayResult(
            bytes=self.moved,
            source=result(source_argv, self.source_status, "", src_err, duration=3.0),
            destination=result(destination_argv, self.destination_status, "", dst_err, duration=3.5),
        )


@pytest.mark.parametrize("path", HOSTILE)
def test_copy_between_hosts_passes_paths_as_arguments(monkeypatch, path):
    fake = FakeRelay()
    monkeypatch.setattr(images, "relay", fake)
    source, destination, seen = FakeSession(address="192.0.2.10"), FakeSession(address="192.0.2.11"), []
    copied = images.copy_between_hosts(source, path, destination, path, runas=RUNAS, on_bytes=seen.append,
                                       timeout=900)
    [call] = fake.calls
    assert call.source is source and call.destination is destination and call.timeout == 900
    assert call.source_argv == ["dd", f"if={path}", "bs=4M", "status=none"]
    assert shlex.split(shlex.join(call.source_argv)) == call.source_argv
    assert call.destination_argv == ["sh", "-c", images.WRITE_STDIN_SH, "write", path, *RUNAS]
    assert_path_is_one_literal_argument(call.destination_argv, path)
    assert seen == [16777216]
    assert copied == images.CopyResult(bytes=16777216, seconds=3.5)
    assert source.calls == [] and destination.calls == []  # everything went through the relay


@pytest.mark.parametrize(
    "source_status, destination_status, stderr, failed_on, message_has, hint_has",
    [
        (-1, 17, "dd: failed to open '/mnt/vm/web-1.qcow2': File exists\n", "192.0.2.11", "File exists",
         "already there"),
        (-1, 1, "dd: error writing '/mnt/vm/web-1.qcow2': No space left on device\n1+0 records in\n",
         "192.0.2.11", "No space left on device", "The destination is full"),
        (-1, 1, "dd: failed to open '/mnt/vm/web-1.qcow2': Permission denied\n", "192.0.2.11",
         "Permission denied", "root_squash"),
        (1, 0, "dd: failed to open '/images/web-1.qcow2': No such file or directory\n", "192.0.2.10",
         "No such file or directory", ""),
    ],
)
def test_copy_between_hosts_failure_names_the_end_that_failed(
    monkeypatch, source_status, destination_status, stderr, failed_on, message_has, hint_has
):
    monkeypatch.setattr(images, "relay", FakeRelay(source_status, destination_status, stderr))
    with pytest.raises(images.CopyFailed) as failed:
        images.copy_between_hosts(FakeSession(address="192.0.2.10"), "/images/web-1.qcow2",
                                  FakeSession(address="192.0.2.11"), "/mnt/vm/web-1.qcow2", timeout=60)
    message = failed.value.message
    assert message.startswith("Copying /images/web-1.qcow2 (192.0.2.10) to /mnt/vm/web-1.qcow2 (192.0.2.11) failed")
    assert f"failed on {failed_on} (exit {source_status if failed_on == '192.0.2.10' else destination_status})" \
        in message
    assert message_has in message
    assert hint_has in failed.value.hint if hint_has else failed.value.hint == ""


# --------------------------------------------------------------------------- the scripts, for real


class LocalSession:
    """Runs argv on this machine the way sshd does with SSHSession.run's command line."""

    target = SimpleNamespace(address="localhost")

    def __init__(self):
        self.calls: list[list[str]] = []

    def run(self, argv, *, timeout=30.0, check=True, stdin=None, on_stderr=None):
        self.calls.append(argv)
        started = time.monotonic()
        proc = subprocess.run(["sh", "-c", shlex.join(argv)], input=(stdin or "").encode(), capture_output=True,
                              timeout=timeout)
        if on_stderr is not None and proc.stderr:
            on_stderr(proc.stderr)
        out = result(argv, proc.returncode, proc.stdout.decode(), proc.stderr.decode(), time.monotonic() - started)
        if check and out.exit_status:
            raise CommandFailed(argv, out.exit_status, out.stdout, out.stderr)
        return out


HOSTILE_NAMES = ["my disk.qcow2", "it's \"quoted\".qcow2", "a;touch pwned;.qcow2", "$(touch pwned)`touch pwned`.qcow2",
                 "-rf.qcow2"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_copy_on_host_script_copies_a_hostile_name_exactly(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    source, destination = tmp_path / "src" / name, tmp_path / "dst" / name
    data = bytes(range(256)) * 4096 + b"\0" * 2**20 + b"end"  # with a hole for conv=sparse
    source.write_bytes(data)
    seen = []
    session = LocalSession()
    copied = images.copy_on_host(session, str(source), str(destination), on_bytes=seen.append, timeout=60)
    assert destination.read_bytes() == data and copied.bytes == len(data)
    assert seen and seen[-1] == len(data)
    assert images.sha256(session, str(destination)) == hashlib.sha256(data).hexdigest()
    assert images.file_facts(session, str(destination)).size == len(data)
    assert not (tmp_path / "pwned").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]


def test_copy_on_host_script_never_overwrites_an_existing_file(tmp_path):
    source, destination = tmp_path / "web-1.qcow2", tmp_path / "copy of web-1.qcow2"
    source.write_bytes(b"new data")
    destination.write_bytes(b"somebody else's image")
    with pytest.raises(images.CopyFailed) as failed:
        images.copy_on_host(LocalSession(), str(source), str(destination), timeout=60)
    assert "(exit 17)" in failed.value.message and "File exists" in failed.value.message
    assert "already there" in failed.value.hint
    assert destination.read_bytes() == b"somebody else's image"


def test_copy_on_host_script_leaves_nothing_when_the_source_is_missing(tmp_path):
    with pytest.raises(images.CopyFailed) as failed:
        images.copy_on_host(LocalSession(), str(tmp_path / "gone.qcow2"), str(tmp_path / "copy.qcow2"), timeout=60)
    assert "(exit 2)" in failed.value.message and "cannot read" in failed.value.message
    assert not (tmp_path / "copy.qcow2").exists()


def test_copy_on_host_script_removes_half_a_copy_when_the_writer_fails(tmp_path):
    source = tmp_path / "web-1.qcow2"
    source.write_bytes(b"x" * 2**20)
    # The runas prefix is the writer: here one whose dd fails after writing part of the copy
    # (the file itself was created by the script first, so it is ours to remove).
    failing_writer = ["sh", "-c", 'if [ "$1" = dd ]; then "$@"; exit 1; fi; exec "$@"', "writer"]
    with pytest.raises(images.CopyFailed):
        images.copy_on_host(LocalSession(), str(source), str(tmp_path / "copy.qcow2"), runas=failing_writer,
                            timeout=60)
    assert not (tmp_path / "copy.qcow2").exists()


def test_write_stdin_script_creates_exclusively_and_takes_the_path_literally(tmp_path):
    name = "$(touch pwned) it's.qcow2"
    target = tmp_path / name
    argv = ["sh", "-c", images.WRITE_STDIN_SH, "write", str(target)]
    done = subprocess.run(argv, input=b"copied bytes", capture_output=True, cwd=tmp_path)
    assert done.returncode == 0 and target.read_bytes() == b"copied bytes"
    again = subprocess.run(argv, input=b"other bytes", capture_output=True, cwd=tmp_path)
    assert again.returncode == 17 and b"File exists" in again.stderr
    assert target.read_bytes() == b"copied bytes" and not (tmp_path / "pwned").exists()


def test_copies_are_created_readable_by_their_owner_only(tmp_path):
    source = tmp_path / "web-1.qcow2"
    source.write_bytes(b"guest data")
    source.chmod(0o644)
    copy = tmp_path / "copy.qcow2"
    images.copy_on_host(LocalSession(), str(source), str(copy), timeout=60)
    assert copy.read_bytes() == b"guest data"
    assert copy.stat().st_mode & 0o777 == 0o600
