"""hosts.adapters.ssh against a real paramiko SSH server on 127.0.0.1."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import threading

import pytest

from hosts.adapters.errors import (
    CommandFailed,
    CommandTimeout,
    HostAuthError,
    HostKeyMismatch,
    HostKeyUnknown,
    HostUnreachable,
)
from hosts.adapters.ssh import (
    HostKeyInfo,
    SSHSession,
    SSHTarget,
    check_host_key,
    fetch_host_key,
    fingerprint_of,
    generate_keypair,
    load_private_key,
    parse_openssh_key,
    public_key_of,
)

HOSTILE_ARGV = ["echo", "a; rm -rf /", "$(x)", "`y`"]


def _target(server, keypair, **overrides) -> SSHTarget:
    values = dict(
        address="127.0.0.1",
        port=server.port,
        user="root",
        private_key_pem=keypair[0],
        pinned_host_key=server.host_key.openssh,
        connect_timeout=5.0,
    )
    values.update(overrides)
    return SSHTarget(**values)


# --- keys and fingerprints (no network) ------------------------------------


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_fingerprint_matches_ssh_keygen(tmp_path, client_keypair):
    public = client_keypair[1]
    (tmp_path / "key.pub").write_text(public + "\n")
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(tmp_path / "key.pub")],
        capture_output=True, text=True, check=True,
    ).stdout
    assert fingerprint_of(public.split()[1]) == out.split()[1]
    assert HostKeyInfo.from_openssh(public).fingerprint == out.split()[1]


def test_generate_keypair_makes_an_openssh_ed25519_pair():
    private_pem, public = generate_keypair()
    assert private_pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    key_type, key_b64, comment = public.split()
    assert (key_type, comment) == ("ssh-ed25519", "vmportal")
    assert public_key_of(private_pem) == public
    assert load_private_key(private_pem).get_base64() == key_b64
    assert generate_keypair()[1] != public


def test_parse_openssh_key_rejects_malformed_keys(client_keypair):
    key_type, key_b64 = parse_openssh_key(client_keypair[1])
    assert key_type == "ssh-ed25519"
    with pytest.raises(ValueError):
        parse_openssh_key("ssh-ed25519")
    with pytest.raises(ValueError):
        parse_openssh_key("ssh-ed25519 not*base64")
    with pytest.raises(ValueError, match="not a ssh-rsa key"):
        parse_openssh_key(f"ssh-rsa {key_b64}")


def test_check_host_key_match_mismatch_unknown(client_keypair):
    presented = HostKeyInfo.from_openssh(client_keypair[1])
    check_host_key(presented, presented.openssh)  # match: no error
    check_host_key(presented, presented.openssh + " a comment")

    other = HostKeyInfo.from_openssh(generate_keypair()[1])
    with pytest.raises(HostKeyMismatch) as mismatch:
        check_host_key(presented, other.openssh, address="h1", port=22)
    assert mismatch.value.expected_fingerprint == other.fingerprint
    assert mismatch.value.actual_fingerprint == presented.fingerprint
    assert mismatch.value.hint

    with pytest.raises(HostKeyUnknown) as unknown:
        check_host_key(presented, None, address="h1", port=2222)
    assert unknown.value.fingerprint == presented.fingerprint
    assert (unknown.value.key_type, unknown.value.key_b64) == ("ssh-ed25519", presented.key_b64)
    assert "h1:2222" in unknown.value.message


# --- host key trust against a live server ----------------------------------


def test_fetch_host_key_reads_the_key_without_logging_in(ssh_server):
    info = fetch_host_key("127.0.0.1", ssh_server.port, timeout=5)
    assert info == ssh_server.host_key
    assert info.fingerprint.startswith("SHA256:")
    assert ssh_server.log.auth_attempts == []


def test_session_with_the_pinned_key_runs_commands(ssh_server, client_keypair):
    with SSHSession(_target(ssh_server, client_keypair)) as ssh:
        result = ssh.run(["printf", "%s|", "one", "two words"])
        assert ssh.host_key == ssh_server.host_key
    assert result.stdout == "one|two words|"
    assert result.exit_status == 0 and result.ok
    assert result.argv == ["printf", "%s|", "one", "two words"]
    assert result.duration_s >= 0
    assert ssh_server.log.auth_attempts == [("root", "publickey")]


def test_trust_on_first_use_then_pin(ssh_server, client_keypair):
    """The TOFU flow: read the key, (a person confirms it), connect with it pinned."""
    pin = fetch_host_key("127.0.0.1", ssh_server.port).openssh
    with SSHSession(_target(ssh_server, client_keypair, pinned_host_key=pin)) as ssh:
        assert ssh.run(["echo", "ok"]).stdout == "ok\n"


def test_wrong_pin_is_refused_before_any_credentials_are_sent(ssh_server, client_keypair):
    wrong = generate_keypair()[1]
    with pytest.raises(HostKeyMismatch) as exc:
        with SSHSession(_target(ssh_server, client_keypair, pinned_host_key=wrong)):
            pytest.fail("connected despite a wrong pin")
    assert exc.value.actual_fingerprint == ssh_server.host_key.fingerprint
    assert exc.value.expected_fingerprint == HostKeyInfo.from_openssh(wrong).fingerprint
    assert ssh_server.log.auth_attempts == []
    assert ssh_server.log.commands == []


def test_no_pin_raises_unknown_with_the_fingerprint(ssh_server, client_keypair):
    with pytest.raises(HostKeyUnknown) as exc:
        with SSHSession(_target(ssh_server, client_keypair, pinned_host_key=None)):
            pytest.fail("connected to an unpinned host")
    assert exc.value.fingerprint == ssh_server.host_key.fingerprint
    assert exc.value.key_b64 == ssh_server.host_key.key_b64
    assert ssh_server.log.auth_attempts == []


def test_trust_unknown_host_key_only_when_asked_and_never_over_a_pin(ssh_server, client_keypair):
    target = _target(ssh_server, client_keypair, pinned_host_key=None)
    with SSHSession(target, trust_unknown_host_key=True) as ssh:
        assert ssh.host_key == ssh_server.host_key
    wrong = _target(ssh_server, client_keypair, pinned_host_key=generate_keypair()[1])
    with pytest.raises(HostKeyMismatch):
        SSHSession(wrong, trust_unknown_host_key=True).connect()


def test_pinned_rsa_key_is_negotiated_on_a_host_with_several_keys(ssh_server_two_keys, client_keypair):
    server = ssh_server_two_keys
    assert fetch_host_key("127.0.0.1", server.port).key_type == "ssh-ed25519"
    rsa_pin = HostKeyInfo.from_pkey(server.host_keys[1]).openssh
    with SSHSession(_target(server, client_keypair, pinned_host_key=rsa_pin)) as ssh:
        assert ssh.host_key.key_type == "ssh-rsa"
        assert ssh.run(["true"]).ok


# --- authentication and connection errors ----------------------------------


def test_unknown_client_key_is_an_auth_error(ssh_server, client_keypair):
    stranger = generate_keypair()
    with pytest.raises(HostAuthError):
        with SSHSession(_target(ssh_server, stranger)):
            pass


def test_password_login(ssh_server, client_keypair, ssh_password):
    with SSHSession(_target(ssh_server, client_keypair, private_key_pem=None, password=ssh_password)) as ssh:
        assert ssh.run(["echo", "hi"]).stdout == "hi\n"
    with pytest.raises(HostAuthError):
        SSHSession(_target(ssh_server, client_keypair, private_key_pem=None, password="nope")).connect()


def test_no_credentials_is_an_auth_error(ssh_server, client_keypair):
    with pytest.raises(HostAuthError):
        SSHSession(_target(ssh_server, client_keypair, private_key_pem=None)).connect()


def test_refused_port_is_unreachable(free_port):
    with pytest.raises(HostUnreachable, match="refused"):
        fetch_host_key("127.0.0.1", free_port, timeout=2)


def test_unresolvable_name_is_unreachable():
    with pytest.raises(HostUnreachable):
        fetch_host_key("no-such-host.invalid", 22, timeout=2)


def test_a_port_that_is_not_ssh_is_unreachable():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer_garbage():
        conn, _ = listener.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        with pytest.raises(HostUnreachable, match="handshake"):
            fetch_host_key("127.0.0.1", listener.getsockname()[1], timeout=3)
    finally:
        thread.join(timeout=5)
        listener.close()


def test_silent_port_times_out_as_unreachable():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the TCP connection but never speaks SSH
    try:
        with pytest.raises(HostUnreachable):
            fetch_host_key("127.0.0.1", listener.getsockname()[1], timeout=1)
    finally:
        listener.close()


# --- running commands ------------------------------------------------------


def test_argv_reaches_the_host_as_one_shlex_joined_command(ssh_server, client_keypair):
    ssh_server.mode = "record"  # the server only echoes the command line back
    with SSHSession(_target(ssh_server, client_keypair)) as ssh:
        result = ssh.run(HOSTILE_ARGV)
    assert ssh_server.log.commands == [shlex.join(HOSTILE_ARGV)]
    assert result.stdout == "echo 'a; rm -rf /' '$(x)' '`y`'"
    assert shlex.split(result.stdout) == HOSTILE_ARGV


def test_hostile_arguments_stay_literal_in_a_real_shell(ssh_server, client_keypair, tmp_path):
    canary = tmp_path / "pwned"
    args = [
        f"a; touch {canary}",
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"' ; touch {canary}; '",
        "*",
        "line\nbreak",
        "",
    ]
    with SSHSession(_target(ssh_server, client_keypair)) as ssh:
        result = ssh.run(["printf", "%s\\0", *args])
    assert result.stdout.split("\0")[:-1] == args
    assert not canary.exists()


def test_run_rejects_anything_but_a_list_of_strings(ssh_server, client_keypair):
    with SSHSession(_target(ssh_server, client_keypair)) as ssh:
        with pytest.raises(TypeError):
            ssh.run("echo hi")
        with pytest.raises(TypeError):
            ssh.run(("echo", "hi"))
        with pytest.raises(TypeError):
            ssh.run(["echo", 1])
        with pytest.raises(TypeError):
            ssh.run([])
    assert ssh_server.log.commands == []


def test_nonzero_exit_raises_command_failed(ssh_server, client_keypair):
    with SSHSession(_target(ssh_server, client_keypair)) as ssh:
        with pytest.raises(CommandFailed) as exc:
            ssh.run(["sh", "-c", "echo out; echo oops >&2; exit 3"])
        unchecked = ssh.run(["sh", "-c", "exit 4"], check=False)
    assert exc.value.exit_status == 3
    assert exc.value.stdout == "out\n"
    assert exc.value.stderr == "oops\n"
    assert exc.value.argv == ["sh", "-c", "echo out; echo oops >&2; exit 3"]
    assert "oops" in exc.value.message
    assert unchecked.exit_status == 4 and not unchecked.ok


def test_stdin_is_fed_to_the_command(ssh_server, client_keypair):
    with SSHSession(_target(ssh_server, client_keypair)) as ssh:
        assert ssh.run(["cat"], stdin="hello\nworld\n").stdout == "hello\nworld\n"
        assert ssh.run(["cat"]).stdout == ""


def test_large_output_is_read_completely(ssh_server, client_keypair):
    with SSHSession(_target(ssh_server, client_keypair)) as ssh:
        result = ssh.run(["head", "-c", "3000000", "/dev/zero"])
    assert len(result.stdout) == 3_000_000


def test_slow_command_times_out(ssh_server, client_keypair):
    with SSHSession(_target(ssh_server, client_keypair)) as ssh:
        with pytest.raises(CommandTimeout) as exc:
            ssh.run(["sleep", "3"], timeout=0.5)
        assert ssh.run(["echo", "still usable"]).stdout == "still usable\n"
    assert exc.value.argv == ["sleep", "3"]


def test_session_closes_on_exit_even_after_an_error(ssh_server, client_keypair):
    session = SSHSession(_target(ssh_server, client_keypair))
    with pytest.raises(RuntimeError):
        with session:
            transport = session._transport
            raise RuntimeError("boom")
    assert session._transport is None
    assert not transport.is_active()
    with pytest.raises(RuntimeError, match="not connected"):
        session.run(["true"])
