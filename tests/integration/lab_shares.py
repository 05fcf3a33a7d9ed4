"""Shared storage on the lab for integration tests: a share set up by the NFS wizard, undone after.

Imported by the test modules of this folder (pytest puts it on sys.path). Each share uses its
own export and mount paths and the undo touches only what that share added, because other
engineers use the same lab at the same time.
"""

from __future__ import annotations

import subprocess
import time

import libvirt
import pytest

from core.actors import Actor
from hosts.management.commands.lab_onboard import onboard_lab_host
from lab.hosts import ssh_argv
from storage import libvirt_pool
from storage.models import ShareSetup
from storage.plan import managed_block, pool_name_for

GANESHA_CONF = "/etc/ganesha/ganesha.conf"
FSTAB = "/etc/fstab"


def sh(host: dict, argv: list[str], check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(ssh_argv(host["address"], argv), capture_output=True, text=True, timeout=60, check=check)


def listing(host: dict, directory: str) -> set[str]:
    return set(sh(host, ["ls", "-A", directory]).stdout.split())


def mtime(host: dict, path: str) -> str:
    return sh(host, ["stat", "-c", "%Y.%y", path], check=True).stdout.strip()


def fstab_backups(host: dict) -> set[str]:
    return {n for n in listing(host, "/etc") if n.startswith(f"fstab.vmportal-{host['name']}-")}


@pytest.fixture
def onboarded(lab):
    return {entry["name"]: onboard_lab_host(entry, actor=Actor.system())[0] for entry in lab["hosts"]}


def write(host: dict, path: str, text: str) -> None:
    """Replace a file's content in place (tee truncates): the lab's /etc/fstab is a bind-mounted file."""
    subprocess.run(ssh_argv(host["address"], ["tee", path]), input=text, text=True, capture_output=True, timeout=60, check=True)


def drop_block(host: dict, path: str, kind: str, item: str) -> None:
    """Remove our marked block (only ours: other tests may be using the same file right now)."""
    text = sh(host, ["cat", path], check=True).stdout
    block = managed_block(text, kind, item)
    if block:
        write(host, path, text.replace(block, "", 1))


def undo_share(server: dict, clients: list[dict], export: str, mount: str, stamps: set[str]) -> None:
    """Undo what a setup of export → mount did on the lab hosts, leaving other tests' shares alone."""
    for client in clients:
        sh(client, ["umount", mount])
        drop_block(client, FSTAB, "mount", mount)
        for stamp in stamps:
            sh(client, ["rm", "-f", f"{FSTAB}.vmportal-{client['name']}-{stamp}"])
        sh(client, ["rmdir", mount])
        conn = libvirt.open(client["libvirt_uri"])
        try:
            libvirt_pool.stop_and_undefine(conn, pool_name_for(mount))
        finally:
            conn.close()
    drop_block(server, GANESHA_CONF, "export", export)
    for stamp in stamps:
        sh(server, ["rm", "-f", f"{GANESHA_CONF}.vmportal-{server['name']}-{stamp}"])
    conf = sh(server, ["cat", GANESHA_CONF], check=True).stdout
    if "EXPORT" in "\n".join(line.split("#", 1)[0] for line in conf.splitlines()):
        sh(server, ["systemctl", "restart", "nfs-ganesha"])  # still serving another share: drop ours
    else:  # nothing left to serve: as the lab host was before any share
        sh(server, ["systemctl", "stop", "nfs-ganesha"])
        sh(server, ["systemctl", "stop", "rpcbind"])
    sh(server, ["rm", "-rf", "--one-file-system", export])
    # Checked here, so a leak fails the test that made it.
    assert f"vmportal export {export}" not in sh(server, ["cat", GANESHA_CONF], check=True).stdout
    assert sh(server, ["test", "-e", export]).returncode != 0
    for client in clients:
        assert f"vmportal mount {mount}" not in sh(client, ["cat", FSTAB], check=True).stdout
        assert sh(client, ["test", "-e", mount]).returncode != 0


@pytest.fixture
def lab_share(lab, onboarded, transactional_db):
    """Server = the last lab host (the lab's own NFS test uses the first), clients = the others.

    Yields unique paths; afterwards undoes this test's share on the hosts (and only it).
    """
    server, *clients = lab["hosts"][-1], *lab["hosts"][:-1]
    unique = time.time_ns()
    export, mount = f"/srv/vmp-storage-{unique}", f"/mnt/vmp-storage-{unique}"
    yield {"server": server, "clients": clients, "export": export, "mount": mount, "hosts": onboarded}
    undo_share(server, clients, export, mount, set(ShareSetup.objects.values_list("stamp", flat=True)))
