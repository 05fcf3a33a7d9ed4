"""libvirt storage pools: read them, define a ``dir`` pool, mark it autostart, start it.

Plain Python, no Django, like ``hosts.adapters``: functions take an open ``virConnect`` (from
``hosts.adapters.libvirt.open_connection``), return dataclasses and raise only our adapter
errors (``LibvirtFailure``, ``HostUnreachable``) — never ``libvirt.libvirtError``.

Why a ``dir`` pool over the NFS mount and not a ``netfs`` pool: the mount is the operating
system's (an /etc/fstab line, mounted at boot with ``_netdev`` ordering), visible to admins with
``findmnt`` and usable by anything else on the host; a ``netfs`` pool would make libvirt mount
and unmount the share itself whenever the pool starts or stops, i.e. a second owner of the
same mount. (In the lab the kernel has no NFS client, so a ``netfs`` pool could not run there
either.)
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

import libvirt

from hosts.adapters.errors import LibvirtFailure
from hosts.adapters.libvirt import translate_error


@dataclass(frozen=True)
class PoolInfo:
    name: str
    type: str
    path: str
    active: bool
    autostart: bool


def dir_pool_xml(name: str, path: str) -> str:
    """The XML of a ``dir`` pool named ``name`` over the directory ``path`` (pure)."""
    return (
        "<pool type='dir'>\n"
        f"  <name>{escape(name)}</name>\n"
        "  <target>\n"
        f"    <path>{escape(path)}</path>\n"
        "  </target>\n"
        "</pool>\n"
    )


def parse_pool_xml(xml: str) -> tuple[str, str, str]:
    """(name, type, target path) of a pool's XML description."""
    root = ET.fromstring(xml)
    return (root.findtext("name") or "", root.get("type") or "", (root.findtext("target/path") or "").rstrip("/") or "/")


def _info(pool: libvirt.virStoragePool) -> PoolInfo:
    name, kind, path = parse_pool_xml(pool.XMLDesc(0))
    return PoolInfo(name=name, type=kind, path=path, active=bool(pool.isActive()), autostart=bool(pool.autostart()))


def list_pools(conn: libvirt.virConnect) -> list[PoolInfo]:
    """Every storage pool of the host, active or not."""
    try:
        return sorted((_info(p) for p in conn.listAllStoragePools(0)), key=lambda p: p.name)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action="listing storage pools") from exc


def get_pool(conn: libvirt.virConnect, name: str) -> PoolInfo | None:
    """The pool called ``name``, or None if there is none."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return None
        raise translate_error(exc, action=f"looking up pool {name}") from exc
    try:
        return _info(pool)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"reading pool {name}") from exc


def define_pool(conn: libvirt.virConnect, xml: str) -> PoolInfo:
    """Define (persistently) the pool described by ``xml``; it stays inactive until started."""
    try:
        return _info(conn.storagePoolDefineXML(xml, 0))
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action="defining the storage pool") from exc


def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool:
    try:
        return conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise LibvirtFailure(f"There is no storage pool {name}.", code=exc.get_error_code()) from exc
        raise translate_error(exc, action=f"looking up pool {name}") from exc


def set_autostart(conn: libvirt.virConnect, name: str) -> None:
    """Start the pool whenever libvirtd starts."""
    try:
        _lookup(conn, name).setAutostart(1)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"marking pool {name} autostart") from exc


def start_pool(conn: libvirt.virConnect, name: str) -> None:
    """Start (activate) the pool; a pool already active is left as it is."""
    pool = _lookup(conn, name)
    try:
        if not pool.isActive():
            pool.create(0)
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"starting pool {name}") from exc


def stop_and_undefine(conn: libvirt.virConnect, name: str) -> bool:
    """Stop and remove the pool's definition (its files stay). False if there was no such pool."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return False
        raise translate_error(exc, action=f"looking up pool {name}") from exc
    try:
        if pool.isActive():
            pool.destroy()
        pool.undefine()
    except libvirt.libvirtError as exc:
        raise translate_error(exc, action=f"removing pool {name}") from exc
    return True
