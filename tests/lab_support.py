"""What the portal's lab tests share: knobs undone afterwards, guests of their own, where a guest
is, the lab hosts in the inventory, and an NFS share set up by the wizard and undone after.

Imported by the lab test modules of tests/integration and tests/e2e (pytest puts this folder,
the one of tests/conftest.py, on sys.path). Other engineers use the same lab at the same time:
guests get unique names and are removed wherever they ended up; a share uses its own export
and mount paths and its undo touches only what it added.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import time
import uuid

import libvirt
import pytest

from core.actors import Actor
from core.choices import JobStatusChoices
from hosts import services as host_services
from hosts.adapters import libvirt as lv
from hosts.adapters import migration as mg
from hosts.jobs import refresh_host_job
from hosts.management.commands.lab_onboard import onboard_lab_host
from hosts.models import Host, VirtualMachine
from lab import config, guests, knobs
from lab import hosts as lab_hosts
from lab.hosts import ssh_argv
from storage import libvirt_pool, services as storage_services
from storage.choices import ShareStatusChoices
from storage.models import ShareSetup
from storage.plan import managed_block, pool_name_for

SYSTEM = Actor.system()


# --- guests and knobs --------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"vmp-{prefix}-{uuid.uuid4().hex[:6]}"


def knob_args(name: str, host: str, *, undo: bool, **kw) -> argparse.Namespace:
    return argparse.Namespace(knob=name, host=host, as_host=kw.get("as_host"), name=kw.get("guest"),
                              rate=kw.get("rate", "4mbit"), disk=kw.get("disk", "local"), undo=undo)


def run_knob(name: str, host: str, *, undo: bool = False, **kw) -> dict | None:
    return knobs.run_knob(knob_args(name, host, undo=undo, **kw))


@contextlib.contextmanager
def knob(name: str, host: dict, **kw):
    """Apply a lab knob; undo it (and delete the disks of a guest it made) however the test ends."""
    try:
        yield run_knob(name, host["name"], **kw)
    finally:
        run_knob(name, host["name"], undo=True, **kw)
        if kw.get("guest") and name != "duplicate-name":
            for f in lab_hosts.guest_disk_files(kw["guest"]):
                f.unlink(missing_ok=True)
        if name == "duplicate-name":
            (config.paths().disks / f"{kw['guest']}.dup-{host['name']}.img").unlink(missing_ok=True)


@contextlib.contextmanager
def heartbeat_guest(host: dict, prefix: str = "hb"):
    """A heartbeat guest of our own on ``host``: (name, uuid); removed wherever it ended up."""
    spec = guests.GuestSpec(name=unique(prefix)).with_uuid()
    try:
        lab_hosts.start_guest(host, spec)
        lab_hosts.wait_heartbeats([spec.name], since=time.time() - 1, timeout=20)
        yield spec.name, spec.uuid
    finally:
        lab_hosts.remove_guest(spec.name)


def wait_counter(name: str, *, at_least: int, since: float = 0.0, timeout: float = 120) -> int:
    """The guest's last heartbeat counter once it reached ``at_least`` (beats after ``since``)."""
    from lab.heartbeat import report
    from tests.waiting import wait_until

    def reached():
        last = report(name, since=since).last_counter
        return [last] if last is not None and last >= at_least else None

    return wait_until(reached, timeout=timeout, what=f"{name}'s heartbeat counter to reach {at_least}", interval=0.3)[0]


def where(lab_list: list[dict], domain_uuid: str) -> dict[str, str]:
    """Ask libvirt on every lab host: {host: state} of the guest."""
    found = {}
    for h in lab_list:
        with lv.open_connection(h["libvirt_uri"]) as conn:
            presence = mg.domain_presence(conn, domain_uuid)
        if presence.exists:
            found[h["name"]] = presence.state
    return found


def disk_of(host: dict, domain_uuid: str) -> str:
    """The guest's first disk's path, as libvirt on ``host`` has it."""
    with lv.open_connection(host["libvirt_uri"]) as conn:
        return next(d.source for d in lv.get_domain(conn, domain_uuid).disks if d.device == "disk")


# --- the portal's view of the lab ---------------------------------------------------------


def refresh(host: Host) -> None:
    job = host_services.host_refresh_request(host=host, actor=SYSTEM, enqueue=False)
    refresh_host_job(job.pk, host.pk)
    job.refresh_from_db()
    assert job.status == JobStatusChoices.SUCCEEDED, job.error


def vm_row(host: Host, domain_uuid: str) -> VirtualMachine:
    refresh(host)
    return VirtualMachine.objects.get(host=host, uuid=domain_uuid)

GANESHA_CONF = "/etc/ganesha/ganesha.conf"
FSTAB = "/etc/fstab"


# --- shell on lab hosts, and NFS shares -------------------------------------------------


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
    """Every lab host in the inventory (trusted, refreshed once), by name."""
    hosts = {}
    for entry in lab["hosts"]:
        host, _created = onboard_lab_host(entry, actor=SYSTEM)
        host.refresh_from_db()
        hosts[entry["name"]] = host
    return hosts


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


def ready_share(lab_share):
    """The lab_share fixture's share, set up by the wizard's service and ready."""
    server, clients = lab_share["server"], lab_share["clients"]
    share, setup, _job = storage_services.share_create(
        server=server["name"], clients=[c["name"] for c in clients], export_path=lab_share["export"],
        mount_path=lab_share["mount"], nfs_version="4.1", actor=SYSTEM,
    )
    storage_services.share_apply_request(setup=setup, actor=SYSTEM)
    share.refresh_from_db()
    assert share.status == ShareStatusChoices.READY, (share.status, share.setups.first().error)
    return share
