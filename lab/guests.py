"""Build the lab's guests from source and describe them to libvirt.

Two boot-sector guests are assembled at build time (binutils only, nothing is
downloaded): ``heartbeat`` prints ``HB <n>`` on COM1 every 100 ms; ``dirty``
runs in protected mode and rewrites ~96 MiB of memory in a loop so a live
migration over a slow link cannot converge.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from lab import config
from lab.system import LabError, run

SOURCES = Path(__file__).resolve().parent / "guest"
IMAGE_SIZE = 1024 * 1024
KINDS = ("heartbeat", "dirty")


def image_path(kind: str) -> Path:
    return config.paths().images / f"{kind}.img"


def build_guests() -> dict:
    """Assemble every boot sector into a 1 MiB raw disk image under images/."""
    p = config.paths()
    p.images.mkdir(parents=True, exist_ok=True)
    built = {}
    for kind in KINDS:
        src = SOURCES / f"{kind}.S"
        with tempfile.TemporaryDirectory() as tmp:
            obj, binary = Path(tmp) / "boot.o", Path(tmp) / "boot.bin"
            run(["as", "--32", "-o", str(obj), str(src)])
            run(["ld", "-m", "elf_i386", "-Ttext", "0x7c00", "--oformat", "binary", "-o", str(binary), str(obj)])
            code = binary.read_bytes()
        if len(code) != 512 or code[510:] != b"\x55\xaa":
            raise LabError(f"{src.name} did not assemble to a 512-byte boot sector ({len(code)} bytes)")
        image = image_path(kind)
        image.write_bytes(code + b"\0" * (IMAGE_SIZE - len(code)))
        built[kind] = str(image)
    (p.images / "build.json").write_text(json.dumps(built, indent=2))
    return built


def guests_built() -> bool:
    return all(image_path(k).exists() for k in KINDS)


@dataclass(frozen=True)
class GuestSpec:
    name: str
    kind: str = "heartbeat"  # heartbeat | dirty | local-disk | shared-disk | linux-local | linux-shared
    memory_mib: int = config.HEARTBEAT_MEMORY_MIB
    domain_type: str = "qemu"
    cpu_xml: str = "<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>"
    uuid: str = ""

    def with_uuid(self) -> "GuestSpec":
        if self.uuid:
            return self
        return GuestSpec(self.name, self.kind, self.memory_mib, self.domain_type, self.cpu_xml, str(uuid.uuid4()))


def serial_socket(name: str) -> Path:
    return config.paths().serial / f"{name}.sock"


def prepare_disk(spec: GuestSpec, *, directory: Path | None = None) -> Path:
    """Give the guest its own copy of its boot image.

    Heartbeat/dirty disks are read-only, so libvirt needs no shared storage to
    migrate them. ``local-disk`` guests get a writable qcow2 overlay in the
    host's private image directory instead (``directory``), ``shared-disk``
    guests one on the lab's shared storage.
    """
    p = config.paths()
    p.disks.mkdir(parents=True, exist_ok=True)
    base = image_path("dirty" if spec.kind == "dirty" else "heartbeat")
    if spec.kind in ("linux-local", "linux-shared"):
        if spec.kind == "linux-local" and directory is None:
            raise LabError("a local-disk guest needs the host's private image directory")
        disk = (directory if spec.kind == "linux-local" else p.shared) / f"{spec.name}.qcow2"
        disk.unlink(missing_ok=True)
        run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"])
        return disk
    if spec.kind == "shared-disk":
        disk = p.shared / f"{spec.name}.qcow2"
        disk.unlink(missing_ok=True)
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(disk)])
        return disk
    if spec.kind == "local-disk":
        if directory is None:
            raise LabError("a local-disk guest needs the host's private image directory")
        disk = directory / f"{spec.name}.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(disk)])
        return disk
    disk = p.disks / f"{spec.name}.img"
    shutil.copyfile(base, disk)
    return disk


def domain_xml(spec: GuestSpec, disk: Path) -> str:
    writable = spec.kind in ("local-disk", "shared-disk", "linux-local", "linux-shared")
    readonly = not writable
    fmt = "qcow2" if writable else "raw"
    sock = serial_socket(spec.name)
    if spec.kind.startswith("linux"):
        from lab import linux_guest

        os_extra = linux_guest.os_xml()
    else:
        os_extra = "<boot dev='hd'/>"
    # The Linux guest answers the guest agent's protocol; libvirt connects to the channel itself.
    agent_channel = ("<channel type='unix'><source mode='bind'/>"
                     "<target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
                     if spec.kind.startswith("linux") else "")
    return f"""<domain type={quoteattr(spec.domain_type)}>
  <name>{escape(spec.name)}</name>
  <uuid>{spec.uuid}</uuid>
  <description>VMPortal lab guest ({escape(spec.kind)})</description>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>{os_extra}</os>
  {spec.cpu_xml}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}'/>
      <source file={quoteattr(str(disk))}/>
      <target dev='vda' bus='virtio'/>
      {'<readonly/>' if readonly else ''}
    </disk>
    <interface type='user'>
      <mac address='{_mac_for(spec.name)}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <serial type='unix'>
      <source mode='connect' path={quoteattr(str(sock))}>
        <reconnect enabled='yes' timeout='1'/>
      </source>
      <target port='0'/>
    </serial>
    {agent_channel}
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _mac_for(name: str) -> str:
    h = uuid.uuid5(uuid.NAMESPACE_DNS, name).bytes
    return "52:54:00:%02x:%02x:%02x" % (h[0], h[1], h[2])


def define_and_start(uri: str, spec: GuestSpec, disk: Path, *, start: bool = True) -> None:
    """Define the guest persistently on the host at ``uri`` and start it."""
    with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
        f.write(domain_xml(spec, disk))
        xml_path = f.name
    try:
        run(["virsh", "-q", "-c", uri, "define", xml_path])
        if start:
            run(["virsh", "-q", "-c", uri, "start", spec.name])
    finally:
        Path(xml_path).unlink(missing_ok=True)
