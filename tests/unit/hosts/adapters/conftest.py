"""An in-process paramiko SSH server on 127.0.0.1 for the adapter tests.

It authenticates one client key (and one password), and for ``exec``
requests either runs the command with ``sh -c`` on this machine, as sshd
would, or only records it and answers with the command line it received
(``mode = "record"``) or fails it at once (``mode = "reject"``). Every
connection's events are recorded so tests can tell, for instance, that no
credentials were offered to a host with the wrong key.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

import paramiko
import pytest

from hosts.adapters.ssh import HostKeyInfo, generate_keypair, load_private_key

PASSWORD = "correct horse"


@dataclass
class ServerLog:
    auth_attempts: list[tuple[str, str]] = field(default_factory=list)  # (user, method)
    commands: list[str] = field(default_factory=list)
    connections: int = 0
    server_errors: list[str] = field(default_factory=list)  # negotiations the server gave up


class _Handler(paramiko.ServerInterface):
    def __init__(self, server: InProcessSSHServer):
        self.server = server

    def get_allowed_auths(self, username):
        return "publickey,password"

    def check_auth_publickey(self, username, key):
        self.server.log.auth_attempts.append((username, "publickey"))
        if key.get_base64() == self.server.client_key_b64:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username, password):
        self.server.log.auth_attempts.append((username, "password"))
        return paramiko.AUTH_SUCCESSFUL if password == PASSWORD else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        command = command.decode() if isinstance(command, bytes) else command
        self.server.log.commands.append(command)
        threading.Thread(target=self.server.serve_exec, args=(channel, command), daemon=True).start()
        return True


class InProcessSSHServer:
    def __init__(self, host_keys: list[paramiko.PKey], client_public_key: str):
        self.host_keys = host_keys
        self.client_key_b64 = client_public_key.split()[1]
        self.mode = "execute"
        self.log = ServerLog()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = self._listener.getsockname()[1]
        self._transports: list[paramiko.Transport] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def host_key(self) -> HostKeyInfo:
        """The first (preferred) host key."""
        return HostKeyInfo.from_pkey(self.host_keys[0])

    def _accept_loop(self):
        while not self._stopping:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.log.connections += 1
            # Each connection negotiates in its own thread, so a slow or stray
            # client never holds up the next one waiting in the backlog.
            threading.Thread(target=self._serve_connection, args=(sock,), daemon=True).start()

    def _serve_connection(self, sock: socket.socket):
        transport = paramiko.Transport(sock)
        # Generous server-side limits: on a loaded machine the client's own
        # timeouts are the ones a test means to exercise.
        transport.banner_timeout = 60
        transport.handshake_timeout = 60
        transport.auth_timeout = 60
        for key in self.host_keys:
            transport.add_server_key(key)
        self._transports.append(transport)
        try:
            transport.start_server(server=_Handler(self))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self.log.server_errors.append(repr(exc))
            transport.close()

    def serve_exec(self, channel: paramiko.Channel, command: str):
        try:
            if self.mode == "reject":
                # Like a host without libvirt: the command fails at once.
                time.sleep(0.2)  # let the exec reply reach the client first
                channel.sendall_stderr(b"no libvirt here\n")
                channel.send_exit_status(1)
                return
            # Read stdin to its EOF first: the client sends that only after the
            # exec request was answered, so replies cannot overtake it.
            stdin = bytearray()
            while True:
                chunk = channel.recv(65536)
                if not chunk:
                    break
                stdin += chunk
            if self.mode == "record":
                channel.sendall(command.encode())
                channel.send_exit_status(0)
                return
            proc = subprocess.Popen(
                ["sh", "-c", command],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = proc.communicate(bytes(stdin), timeout=30)
            channel.sendall(out)
            channel.sendall_stderr(err)
            channel.send_exit_status(proc.returncode)
        except (OSError, EOFError, paramiko.SSHException, subprocess.TimeoutExpired):
            pass
        finally:
            channel.close()

    def close(self):
        self._stopping = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._listener.close()
        for transport in self._transports:
            transport.close()
        self._thread.join(timeout=5)


def _ed25519_host_key() -> paramiko.PKey:
    private_pem, _ = generate_keypair()
    return load_private_key(private_pem)


@pytest.fixture(scope="session")
def client_keypair() -> tuple[str, str]:
    """The portal's key pair as generate_keypair() makes it."""
    return generate_keypair()


@pytest.fixture
def ssh_server(client_keypair):
    server = InProcessSSHServer([_ed25519_host_key()], client_keypair[1])
    yield server
    server.close()


@pytest.fixture
def ssh_server_two_keys(client_keypair):
    """A server offering an ed25519 and an RSA host key (ed25519 preferred)."""
    rsa_key = paramiko.RSAKey.generate(2048)
    server = InProcessSSHServer([_ed25519_host_key(), rsa_key], client_keypair[1])
    yield server
    server.close()


@pytest.fixture
def ssh_password() -> str:
    """The password the in-process server accepts."""
    return PASSWORD


@pytest.fixture
def free_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
