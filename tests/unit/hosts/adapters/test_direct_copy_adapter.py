"""hosts.adapters.direct_copy: the pure parts as tables, the destination's scripts (forced
command, authorize, revoke) run for real on this machine with hostile names, and
DirectRoute's sequence and failure naming against fake sessions."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from hosts.adapters import direct_copy as dc
from hosts.adapters import images
from hosts.adapters.errors import AdapterError
from hosts.adapters.ssh import CommandResult, generate_keypair

from tests.unit.hosts.adapters.test_images_adapter import HOSTILE_NAMES

HOST_KEY = generate_keypair("")[1]  # any valid "type base64" stands in for a pinned host key


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    "pattern, expected",
    [
        (".ssh/authorized_keys", "/root/.ssh/authorized_keys"),
        ("%h/.ssh/authorized_keys", "/root/.ssh/authorized_keys"),
        ("/etc/ssh/keys/%u", "/etc/ssh/keys/root"),
        ("/etc/ssh/keys/%U.pub", "/etc/ssh/keys/0.pub"),
        ("/srv/100%%/%u", "/srv/100%/root"),
        ("/var/lib/lab/h1/authorized_keys", "/var/lib/lab/h1/authorized_keys"),
        ("keys%", "/root/keys%"),  # a lone % at the end stays
    ],
)
def test_expand_keys_path(pattern, expected):
    assert dc.expand_keys_path(pattern, user="root", home="/root", uid=0) == expected


def test_expand_keys_path_refuses_tokens_it_does_not_know():
    with pytest.raises(ValueError, match="unknown token %k"):
        dc.expand_keys_path("/etc/%k", user="root", home="/root", uid=0)


SSHD_T = "authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2\npubkeyauthentication yes\npermitrootlogin without-password\n"


def test_parse_sshd_facts_reads_config_home_uid_and_settings():
    facts = dc.parse_sshd_facts("config /etc/lab/sshd_config\nhome /home/ops\nuid 1001\n" + SSHD_T,
                                "warning one\n\nline two\n")
    assert facts == dc.SshdFacts(
        config="/etc/lab/sshd_config", home="/home/ops", uid=1001,
        settings={"authorizedkeysfile": ".ssh/authorized_keys .ssh/authorized_keys2",
                  "pubkeyauthentication": "yes", "permitrootlogin": "without-password"},
        errors=["warning one", "line two"],
    )
    assert dc.keys_file(facts, user="ops") == "/home/ops/.ssh/authorized_keys"


@pytest.mark.parametrize(
    "stdout, stderr, user, message",
    [
        ("config /etc/ssh/sshd_config\nhome /root\nuid 0\n", "sshd: Bad configuration option: x", "root",
         "could not read sshd's configuration (/etc/ssh/sshd_config) (sshd: Bad configuration option: x)"),
        ("home /root\nuid 0\nauthorizedkeysfile .ssh/k\npubkeyauthentication no\n", "", "root",
         "PubkeyAuthentication no"),
        ("home /root\nuid 0\nauthorizedkeysfile .ssh/k\npermitrootlogin no\n", "", "root", "PermitRootLogin no"),
        ("home /root\nuid 0\nauthorizedkeysfile none\n", "", "root", "AuthorizedKeysFile none"),
        ("authorizedkeysfile .ssh/k\n", "", "ops", "the user ops has no entry"),
        ("home /root\nuid 0\nauthorizedkeysfile /etc/%q\n", "", "root", "unknown token %q"),
    ],
)
def test_keys_file_says_why_a_direct_copy_cannot_be_authorized(stdout, stderr, user, message):
    with pytest.raises(dc.DirectUnavailable) as refused:
        dc.keys_file(dc.parse_sshd_facts(stdout, stderr), user=user)
    assert message in refused.value.message


def test_keys_file_lets_a_non_root_user_in_when_root_login_is_off():
    facts = dc.parse_sshd_facts("home /home/ops\nuid 1001\nauthorizedkeysfile %h/k\npermitrootlogin no\n")
    assert dc.keys_file(facts, user="ops") == "/home/ops/k"


@pytest.mark.parametrize(
    "stdout, expected",
    [("ssh exit 0\n", 0), ("noise\nssh exit 255\n", 255), ("ssh exit 17", 17), ("", None), ("xssh exit 1\n", None)],
)
def test_parse_ssh_exit(stdout, expected):
    assert dc.parse_ssh_exit(stdout) == expected


@pytest.mark.parametrize("tag", ["", "UPPER", "has space", "a" * 65, 'x" command="sh', "a\nb"])
def test_bad_tags_are_refused(tag):
    with pytest.raises(ValueError):
        dc.check_tag(tag)


def test_new_tag_is_unique_and_valid():
    a, b = dc.new_tag("cold-7"), dc.new_tag("cold-7")
    assert a != b and a.startswith("vmportal-copy-cold-7-") and dc.check_tag(a) == a


def test_known_hosts_line_pins_the_key_under_the_alias():
    key_type, key_b64 = HOST_KEY.split()[:2]
    assert dc.known_hosts_line(HOST_KEY + " comment") == f"vmportal-destination {key_type} {key_b64}"
    with pytest.raises(ValueError):
        dc.known_hosts_line("not a key")


def test_grant_round_trips_through_json():
    grant = dc.Grant(keys_file="/root/.ssh/authorized_keys", tag="vmportal-copy-cold-1-0a0b0c0d",
                     work_dir="/tmp/vmportal-copy.abcdefghij", source_dir="/tmp/vmportal-copy.ABCDEFGHIJ",
                     from_address="10.0.0.5", fingerprint="SHA256:x", expires="20261204120000")
    assert dc.Grant.from_json(grant.to_json()) == grant


# --------------------------------------------------------------------------- the destination's scripts, for real


def run_forced(script: Path, request: str, data: bytes = b"") -> subprocess.CompletedProcess:
    env = {**os.environ, "SSH_ORIGINAL_COMMAND": request}
    return subprocess.run(["sh", "-c", f"sh {shlex.quote(str(script))}"], input=data, env=env,
                          capture_output=True, timeout=60)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_forced_command_writes_only_the_listed_copy_with_a_hostile_name(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    first, second = tmp_path / f"one {name}", tmp_path / name
    script = tmp_path / "run"
    script.write_text(dc.forced_command_script([(str(first), []), (str(second), [])]))
    data = bytes(range(256)) * 8192 + b"\0" * 2**20 + b"end"
    done = run_forced(script, "write 1", data)
    assert done.returncode == 0, done.stderr
    assert second.read_bytes() == data and not first.exists()
    assert dc.STARTED_MARK.encode() in done.stderr
    assert images.parse_dd_progress(done.stderr) == len(data)  # dd's progress comes back over ssh's stderr
    assert oct(second.stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("request_", ["", "write 2", "write 0; touch pwned", "write 0 extra", "sh", "write  0",
                                      "$(touch pwned)"])
def test_forced_command_refuses_anything_else_and_writes_nothing(tmp_path, monkeypatch, request_):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "copy.qcow2"
    script = tmp_path / "run"
    script.write_text(dc.forced_command_script([(str(target), [])]))
    done = run_forced(script, request_, b"data")
    assert done.returncode == dc.NOT_ALLOWED_EXIT
    assert b"only writes the copies of one migration" in done.stderr
    assert dc.STARTED_MARK.encode() not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_forced_command_never_overwrites_an_existing_file(tmp_path):
    target = tmp_path / "copy.qcow2"
    target.write_bytes(b"somebody else's image")
    script = tmp_path / "run"
    script.write_text(dc.forced_command_script([(str(target), [])]))
    done = run_forced(script, "write 0", b"new data")
    assert done.returncode == images.FILE_EXISTS_EXIT
    assert dc.STARTED_MARK.encode() in done.stderr  # it started: the caller must not relay over it
    assert target.read_bytes() == b"somebody else's image"


def run_script(script: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script, "script", *args], input=stdin.encode(), capture_output=True,
                          timeout=60)


def authorize(keys: Path, tag: str, *, forced: str = "echo hi\n") -> dict[str, str]:
    public = generate_keypair(tag)[1]
    done = run_script(dc.AUTHORIZE_SH, str(keys), "192.0.2.7", " ".join(public.split()[:2]), tag, "600",
                      stdin=forced)
    assert done.returncode == 0, done.stderr
    return dc.parse_fields(done.stdout.decode())


def test_authorize_appends_one_restricted_line_and_revoke_removes_only_it(tmp_path):
    keys = tmp_path / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAAportal vmportal\nssh-rsa AAAAother admin@laptop")  # no final newline
    keys.chmod(0o640)
    a, b = "vmportal-copy-cold-1-aaaaaaaa", "vmportal-copy-cold-2-bbbbbbbb"
    got_a, got_b = authorize(keys, a, forced="case x in esac\n"), authorize(keys, b)
    try:
        lines = keys.read_text().splitlines()
        assert lines[:2] == ["ssh-ed25519 AAAAportal vmportal", "ssh-rsa AAAAother admin@laptop"]
        assert len(lines) == 4 and lines[2].endswith(" " + a) and lines[3].endswith(" " + b)
        work = Path(got_a["dir"])
        assert lines[2].startswith(f'restrict,from="192.0.2.7",expiry-time="{got_a["expires"]}",'
                                   f'command="sh {work}/run" ssh-ed25519 ')
        assert len(got_a["expires"]) == 14 and got_a["expires"].isdigit()
        assert (work / "run").read_text() == "case x in esac\n"
        assert oct(work.stat().st_mode & 0o777) == "0o700"

        done = run_script(dc.REVOKE_SH, str(keys), a, str(work))
        assert done.returncode == 0, done.stderr
        assert keys.read_text().splitlines() == [*lines[:2], lines[3]]
        assert oct(keys.stat().st_mode & 0o777) == "0o640" and not work.exists()
        # Again: nothing left to do, still fine.
        assert run_script(dc.REVOKE_SH, str(keys), a, "").returncode == 0
    finally:
        run_script(dc.REVOKE_SH, str(keys), b, got_b["dir"])
    assert keys.read_text().splitlines() == lines[:2] and not Path(got_b["dir"]).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["authorized_keys"]


def test_revoke_removes_the_directory_the_line_names_when_the_caller_never_learned_it(tmp_path):
    keys = tmp_path / "authorized_keys"
    mine, other = "vmportal-copy-cold-4-dddddddd", "vmportal-copy-cold-5-eeeeeeee"
    got_mine, got_other = authorize(keys, mine), authorize(keys, other)
    try:
        done = run_script(dc.REVOKE_SH, str(keys), mine, "")  # the worker died before it heard the directory
        assert done.returncode == 0, done.stderr
        assert not Path(got_mine["dir"]).exists() and Path(got_other["dir"], "run").exists()
        assert [line.rsplit(" ", 1)[1] for line in keys.read_text().splitlines()] == [other]
    finally:
        run_script(dc.REVOKE_SH, str(keys), other, got_other["dir"])
    assert keys.read_text() == "" and not Path(got_other["dir"]).exists()


def test_revoke_removes_only_directories_of_the_copy_pattern_named_in_the_line(tmp_path):
    keys, victim = tmp_path / "authorized_keys", tmp_path / "victim"
    victim.mkdir()
    tag = "vmportal-copy-cold-6-ffffffff"
    keys.write_text(f'restrict,command="sh {victim}/run" ssh-ed25519 AAAA {tag}\n')
    assert run_script(dc.REVOKE_SH, str(keys), tag, "").returncode == 0
    assert victim.is_dir() and keys.read_text() == ""


def test_authorize_creates_a_missing_keys_file_and_refuses_a_symlink(tmp_path):
    keys = tmp_path / "new dir" / "authorized_keys"
    tag = "vmportal-copy-cold-3-cccccccc"
    got = authorize(keys, tag)
    assert keys.read_text().count("\n") == 1
    run_script(dc.REVOKE_SH, str(keys), tag, got["dir"])
    assert keys.read_text() == ""

    link = tmp_path / "link"
    link.symlink_to(keys)
    done = run_script(dc.AUTHORIZE_SH, str(link), "192.0.2.7", HOST_KEY, tag, "600")
    assert done.returncode != 0 and b"symbolic link" in done.stderr
    assert keys.read_text() == ""


# --------------------------------------------------------------------------- DirectRoute against fake hosts


def ok(stdout="", stderr="", status=0):
    return status, stdout, stderr


class Host:
    """Answers each script by which constant it runs; records argv and stdin."""

    def __init__(self, address, answers):
        self.target = SimpleNamespace(address=address)
        self.answers = answers
        self.calls: list[tuple[list[str], str | None]] = []

    def run(self, argv, *, timeout=30.0, check=True, stdin=None, on_stderr=None):
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), argv
        assert shlex.split(shlex.join(argv)) == argv
        self.calls.append((argv, stdin))
        name = {dc.SOURCE_PREPARE_SH: "prepare", dc.DISCOVER_SH: "discover", dc.AUTHORIZE_SH: "authorize",
                dc.REVOKE_SH: "revoke", dc.SOURCE_CLEANUP_SH: "cleanup", dc.SOURCE_COPY_SH: "copy"}[argv[2]]
        answer = self.answers.get(name, ok())
        status, stdout, stderr = answer(argv) if callable(answer) else answer
        if on_stderr is not None and stderr:
            on_stderr(stderr.encode())
        return CommandResult(argv=argv, exit_status=status, stdout=stdout, stderr=stderr, duration_s=1.5)

    def ran(self):
        return [argv[3] for argv, _ in self.calls]


SRC_DIR, DST_DIR = "/tmp/vmportal-copy.SrcSrcSrc1", "/tmp/vmportal-copy.DstDstDst1"
WRITES = [("/var/lib/libvirt/images/it's \"quoted\".qcow2", ["runuser", "-u", "libvirt-qemu", "--"])]


def hosts(**overrides):
    source = Host("192.0.2.1", {"prepare": ok(f"dir {SRC_DIR}\nfrom 192.0.2.1\n"), **overrides.get("source", {})})
    destination = Host("192.0.2.2", {
        "discover": ok("config /etc/ssh/sshd_config\nhome /root\nuid 0\n" + SSHD_T),
        "authorize": ok(f"dir {DST_DIR}\nexpires 20261204120000\n"), **overrides.get("destination", {}),
    })
    route = dc.DirectRoute(source, destination, endpoint=dc.Endpoint("192.0.2.2", 2222, "root", HOST_KEY),
                           writes=WRITES, label="cold-9", lifetime_s=10)
    return source, destination, route


def test_a_direct_route_opens_copies_and_closes():
    progress = "8388608 bytes (8.4 MB, 8.0 MiB) copied, 1 s\r16777216 bytes (17 MB, 16 MiB) copied, 2 s\n"
    source, destination, route = hosts(source={"copy": ok("ssh exit 0\n", dc.STARTED_MARK + "\n" + progress)})
    grant = route.open()
    assert grant.keys_file == "/root/.ssh/authorized_keys" and grant.work_dir == DST_DIR
    assert grant.source_dir == SRC_DIR and grant.from_address == "192.0.2.1" and grant.tag == route.tag
    assert grant.fingerprint.startswith("SHA256:")
    # The private key goes over stdin, never on a command line; the pinned key into known_hosts.
    prepare_argv, private = source.calls[0]
    assert "PRIVATE KEY" in private and not any("PRIVATE" in a for a in prepare_argv)
    assert prepare_argv[4:] == ["192.0.2.2", dc.known_hosts_line(HOST_KEY)]
    assert destination.calls[0][0][4:] == ["root", "192.0.2.1"]
    authorize_argv, forced = destination.calls[1]
    assert authorize_argv[4] == "/root/.ssh/authorized_keys" and authorize_argv[5] == "192.0.2.1"
    assert authorize_argv[7] == route.tag and authorize_argv[8] == "60"  # at least a minute
    assert forced == dc.forced_command_script(WRITES)

    seen = []
    copied = route.copy(0, "/var/lib/libvirt/images/web 1.qcow2", on_bytes=seen.append, timeout=99)
    assert copied == images.CopyResult(bytes=16777216, seconds=1.5) and seen == [16777216]
    copy_argv = source.calls[1][0]
    assert copy_argv[3:] == ["direct-copy", SRC_DIR, "root", "192.0.2.2", "2222",
                             "/var/lib/libvirt/images/web 1.qcow2", "write 0", dc.CIPHERS]

    assert route.close() == []
    assert source.ran()[-1] == "cleanup" and destination.ran()[-1] == "revoke"
    assert destination.calls[-1][0][4:] == ["/root/.ssh/authorized_keys", route.tag, DST_DIR]
    assert route.close() == []  # twice is harmless: nothing more is run
    assert len(destination.calls) == 3 and len(source.calls) == 3


def test_what_removing_the_key_takes_is_handed_over_before_the_line_is_written():
    source, destination, route = hosts()
    handed = []

    def record(grant):
        assert "authorize" not in destination.ran()
        handed.append(grant)

    grant = route.open(before_authorize=record)
    assert [(g.keys_file, g.tag, g.source_dir, g.from_address, g.work_dir) for g in handed] == [
        ("/root/.ssh/authorized_keys", route.tag, SRC_DIR, "192.0.2.1", "")]
    assert handed[0].fingerprint == grant.fingerprint
    route.close()


def test_a_caller_that_cannot_record_the_key_gets_no_key():
    source, destination, route = hosts()

    def record(grant):
        raise RuntimeError("database is gone")

    with pytest.raises(RuntimeError):
        route.open(before_authorize=record)
    assert "authorize" not in destination.ran() and "revoke" not in destination.ran()
    assert source.ran() == ["prepare", "cleanup"] and route.open_problems == []


def test_a_failed_open_says_what_its_undo_could_not_remove():
    source, destination, route = hosts(destination={
        "authorize": ok(stderr="timed out", status=5), "revoke": ok(stderr="keys file is read-only", status=1)})
    with pytest.raises(dc.DirectUnavailable):
        route.open(before_authorize=lambda grant: None)
    assert len(route.open_problems) == 1 and "keys file is read-only" in route.open_problems[0]


@pytest.mark.parametrize(
    "address, expected",
    [("192.0.2.1", "192.0.2.1"), ("2001:db8::1", "2001:db8::1"), ("labh1.example", None), ("", None),
     ("192.0.2.1; rm -rf /", None)],
)
def test_predicted_from_is_the_source_address_only_when_it_is_an_ip(address, expected):
    assert dc.predicted_from(address) == expected


@pytest.mark.parametrize(
    "source_address, leaves_from, discovered_for",
    [
        ("192.0.2.1", "192.0.2.1", ["192.0.2.1"]),  # asked while the source got ready: once
        ("192.0.2.1", "198.51.100.5", ["192.0.2.1", "198.51.100.5"]),  # the guess was wrong: asked again
        ("src.example", "198.51.100.5", ["198.51.100.5"]),  # nothing to guess: asked after
    ],
)
def test_the_destination_is_asked_about_the_address_the_source_really_leaves_from(
        source_address, leaves_from, discovered_for):
    source, destination, route = hosts(source={"prepare": ok(f"dir {SRC_DIR}\nfrom {leaves_from}\n")})
    source.target.address = source_address
    grant = route.open()
    discovers = [argv for argv, _ in destination.calls if argv[3] == "discover"]
    assert [argv[5] for argv in discovers] == discovered_for
    authorize_argv = next(argv for argv, _ in destination.calls if argv[3] == "authorize")
    assert authorize_argv[5] == leaves_from and grant.from_address == leaves_from
    route.close()


def test_a_source_that_is_not_ready_is_cleaned_up_even_when_the_destination_fails_meanwhile():
    def lost(argv):
        raise AdapterError("connection to 192.0.2.2 lost")

    source, destination, route = hosts(destination={"discover": lost})
    with pytest.raises(AdapterError, match="connection to 192.0.2.2 lost"):
        route.open()
    assert source.ran() == ["prepare", "cleanup"] and "authorize" not in destination.ran()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"source": {"prepare": ok(stderr="no ssh client on this host (install openssh-client)", status=3)}},
         "the source is not ready: no ssh client on this host"),
        ({"source": {"prepare": ok(f"dir {SRC_DIR}\nfrom nonsense\n")}}, "address towards 192.0.2.2 is unclear"),
        ({"destination": {"discover": ok("home /root\nuid 0\nauthorizedkeysfile none\n")}}, "AuthorizedKeysFile none"),
        ({"destination": {"authorize": ok(stderr="/root/.ssh/authorized_keys is a symbolic link", status=5)}},
         "could not authorize a one-time key in /root/.ssh/authorized_keys: /root/.ssh/authorized_keys is a symbolic"),
    ],
)
def test_a_route_that_cannot_open_says_why_and_leaves_nothing(overrides, message):
    source, destination, route = hosts(**overrides)
    with pytest.raises(dc.DirectUnavailable) as refused:
        route.open()
    assert message in refused.value.message
    assert ("cleanup" in source.ran()) == (SRC_DIR in source.answers["prepare"][1])
    authorized = "authorize" in destination.ran()
    assert ("revoke" in destination.ran()) == authorized


@pytest.mark.parametrize(
    "answer, error, message, existed",
    [
        (ok("ssh exit 255\n", "Permission denied (publickey)."), dc.DirectUnavailable,
         "192.0.2.1 could not log in to 192.0.2.2 with the one-time key (ssh exit 255): Permission denied", False),
        (ok("ssh exit 255\n", dc.STARTED_MARK + "\nclient_loop: send disconnect: Broken pipe"), images.CopyFailed,
         "failed between the hosts (ssh from 192.0.2.1 failed): client_loop", False),
        (ok("ssh exit 17\n", dc.STARTED_MARK + "\ndd: failed to open 'x': File exists"), images.CopyFailed,
         "failed on 192.0.2.2 (exit 17): dd: failed to open", True),
        (ok("ssh exit 1\n", dc.STARTED_MARK + "\ndd: error writing 'x': No space left on device"), images.CopyFailed,
         "failed on 192.0.2.2 (exit 1): dd: error writing 'x': No space left on device", False),
        (ok("", "cannot read /x: No such file or permission denied", status=2), images.CopyFailed,
         "failed on the source (exit 2): cannot read /x", False),
    ],
)
def test_a_failed_direct_copy_names_the_end_that_failed(answer, error, message, existed):
    _, _, route = hosts(source={"copy": answer})
    route.open()
    with pytest.raises(error) as failed:
        route.copy(0, "/x", timeout=10)
    assert message in failed.value.message, failed.value.message
    assert dc.STARTED_MARK not in failed.value.message
    if error is images.CopyFailed:
        assert failed.value.target_existed is existed
    assert route.close() == []


def test_close_reports_what_it_could_not_remove():
    _, _, route = hosts(destination={"revoke": ok(stderr="the keys file's directory stayed locked", status=1)},
                        source={"cleanup": ok(stderr="rm: cannot remove", status=1)})
    route.open()
    problems = route.close()
    assert len(problems) == 2
    assert any("could not remove the one-time key vmportal-copy-cold-9-" in p and "stayed locked" in p
               for p in problems)
    assert any(f"could not remove the one-time key's directory {SRC_DIR}" in p for p in problems)


@pytest.mark.parametrize("bad", ["/tmp", "/tmp/vmportal-copy.x", "/root/.ssh", "/tmp/vmportal-copy.abcdefghij/.."])
def test_revoke_and_cleanup_refuse_directories_that_are_not_a_copys(bad):
    session = Host("192.0.2.9", {})
    with pytest.raises(AdapterError, match="refusing to remove"):
        dc.revoke(session, keys_file="/root/.ssh/authorized_keys", tag="vmportal-copy-x-1", work_dir=bad)
    with pytest.raises(AdapterError, match="refusing to remove"):
        dc.cleanup_source(session, source_dir=bad)
    assert session.calls == []
