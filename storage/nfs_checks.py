"""What a working NFS share looks like, as the plan, the proof and the runner all check it (pure).

The mount source as mount(8) writes it, which filesystem types at a mount path count as our
share, and the probes saying that NFS-Ganesha serves its current configuration.
"""

from __future__ import annotations

import ipaddress

from .facts import GANESHA_CONF
from .steps import MATCH_EQUALS, Probe

# Where ganesha.nfsd writes its pid (Debian's and RHEL's units, and the lab's systemctl).
GANESHA_PIDFILE = "/run/ganesha/ganesha.pid"
# Filesystem types a working NFS mount may show. The kernel reports nfs/nfs4 with SOURCE
# server:/export; other shared types are accepted too (the lab's NFS client mounts through
# FUSE as fuse.glusterfs and reports its backing directory as SOURCE), and the proof markers
# then show that it is the right export.
NFS_FSTYPES = ("nfs", "nfs4")
OTHER_SHARED_FSTYPES = ("fuse.glusterfs", "glusterfs")


def nfs_source(address: str, export_path: str) -> str:
    """SERVER:EXPORT as mount(8) and fstab want it (IPv6 addresses in brackets)."""
    try:
        if ipaddress.ip_address(address).version == 6:
            return f"[{address}]:{export_path}"
    except ValueError:
        pass
    return f"{address}:{export_path}"


def mount_matches(fstype: str, source: str, expected_source: str) -> bool:
    """Is what findmnt reports at the mount path our share? (see NFS_FSTYPES)."""
    if fstype in NFS_FSTYPES:
        return source.rstrip("/") == expected_source.rstrip("/")
    return fstype in OTHER_SHARED_FSTYPES


def ganesha_serving_probes(*, wait_s: float = 0.0) -> tuple[Probe, ...]:
    """Ganesha runs, and started after its config last changed (so it serves what the file says)."""
    return (
        Probe(argv=("systemctl", "is-active", "nfs-ganesha"), match=MATCH_EQUALS, value="active", wait_s=wait_s),
        Probe(argv=("find", GANESHA_CONF, "-newer", GANESHA_PIDFILE), match=MATCH_EQUALS, value=""),
    )
