"""The Linux heartbeat guest: a Debian cloud kernel + a static busybox initramfs.

Built on demand (``python -m lab build-guests --linux``): the kernel comes from
Debian's ``linux-image-*-cloud-amd64`` package (``apt-get download``, unpacked
with ``dpkg-deb``, never installed), busybox from ``busybox-static``. The
guest keeps its heartbeat counter on its own disk (``/dev/vda``, written every
10 beats), so after a cold migration the counter goes on from what the disk
says: proof that the disk that moved is the disk that boots.

It also answers the QEMU guest agent's protocol on its ``org.qemu.guest_agent.0`` channel
(``guest-sync``, ``guest-ping``, ``guest-get-time``, from a busybox sh loop), so the portal's
agent probe measures the pause a real guest sees — the serial heartbeat stays the independent
check.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from lab import config
from lab.system import LabError, run

MODULES = (
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/drivers/char/virtio_console.ko",  # the guest agent's channel
)
# virtio_ring before virtio (virtio needs its symbols), the PCI helpers before virtio_pci.
LOAD_ORDER = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk",
              "virtio_console")
AGENT_CHANNEL = "org.qemu.guest_agent.0"
MEMORY_MIB = 128  # 64/80 MiB reset during boot

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do [ -e /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko; done
# The guest agent: one JSON command a line in, one answer a line out (qemu-ga's protocol, the
# commands libvirt and the portal's probe use). read gets EOF while nobody is connected on the
# host side: open the port again shortly after.
agent() {{
    port=
    while [ -z "$port" ]; do
        for p in /sys/class/virtio-ports/*; do
            [ "$(cat $p/name 2>/dev/null)" = "{channel}" ] && port=/dev/${{p##*/}}
        done
        [ -z "$port" ] && sleep 0.2
    done
    while :; do
        exec 3<>"$port"
        while read -r line <&3; do
            case "$line" in
                *guest-sync*)
                    id=${{line#*\\"id\\"}}; id=${{id#*:}}; id=${{id# }}; id=${{id%%[!0-9]*}}
                    echo "{{\\"return\\": ${{id:-0}}}}" >&3 ;;
                *guest-ping*) echo '{{"return": {{}}}}' >&3 ;;
                *guest-get-time*) echo "{{\\"return\\": $(date +%s)000000000}}" >&3 ;;
                *execute*) echo '{{"error": {{"class": "CommandNotFound", "desc": "not supported here"}}}}' >&3 ;;
            esac
        done
        exec 3<&-
        sleep 0.05
    done
}}
agent &
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
n=$(dd if=/dev/vda bs=16 count=1 2>/dev/null | tr -dc 0-9)
n=${{n:-0}}
echo "BOOT disk-counter $n" > /dev/ttyS0
while :; do
    echo "HB $n" > /dev/ttyS0
    n=$((n+1))
    if [ $((n % 10)) -eq 0 ]; then
        printf '%-16s' "$n" | dd of=/dev/vda bs=16 count=1 conv=notrunc,fsync 2>/dev/null
    fi
    sleep 0.1
done
"""


def kernel_path() -> Path:
    return config.paths().images / "linux" / "vmlinuz"


def initrd_path() -> Path:
    """The initramfs, named by what goes into it: a changed init or module list builds a new one."""
    stamp = hashlib.sha256((INIT + " ".join(MODULES)).encode()).hexdigest()[:10]
    return config.paths().images / "linux" / f"initrd-{stamp}.cpio"


def built() -> bool:
    return kernel_path().exists() and initrd_path().exists()


def _cloud_kernel_package() -> str:
    proc = run(["apt-cache", "depends", "linux-image-cloud-amd64"])
    m = re.search(r"Depends: (linux-image-[\w.-]+-cloud-amd64)", proc.stdout)
    if not m:
        raise LabError("cannot find Debian's cloud kernel package (apt-cache depends linux-image-cloud-amd64)")
    return m.group(1)


def build() -> Path:
    busybox = shutil.which("busybox")
    if not busybox or not _static_hint(busybox):
        raise LabError("the Linux guest needs a static busybox: apt-get install -y busybox-static")
    out = config.paths().images / "linux"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.chmod(tmp, 0o755)  # apt's _apt user downloads into it
        package = _cloud_kernel_package()
        proc = subprocess.run(["apt-get", "download", "-q", package], cwd=tmp, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise LabError(f"apt-get download {package} failed: {proc.stderr.strip()[-500:]}")
        deb = next(tmp.glob("linux-image-*.deb"))
        root = tmp / "k"
        run(["dpkg-deb", "-x", str(deb), str(root)], timeout=300)
        vmlinuz = next((root / "boot").glob("vmlinuz-*"))
        moddir = next((root / "lib" / "modules").iterdir())
        initramfs = tmp / "initramfs"
        for d in ("bin", "proc", "sys", "dev", "lib/modules"):
            (initramfs / d).mkdir(parents=True, exist_ok=True)
        shutil.copy(busybox, initramfs / "bin" / "busybox")
        for rel in MODULES:
            if (moddir / rel).exists():  # a driver built into this kernel has no module
                shutil.copy(moddir / rel, initramfs / "lib" / "modules" / Path(rel).name)
        (initramfs / "init").write_text(INIT.format(modules=" ".join(LOAD_ORDER), channel=AGENT_CHANNEL))
        (initramfs / "init").chmod(0o755)
        files = subprocess.run(["find", "."], cwd=initramfs, capture_output=True, text=True, check=True).stdout
        with open(initrd_path(), "wb") as f:
            subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=initramfs, input=files.encode(),
                           stdout=f, check=True)
        shutil.copy(vmlinuz, kernel_path())
    return out


def _static_hint(path: str) -> str:
    # `file` may be missing; a static busybox has no interpreter to ldd.
    proc = subprocess.run(["ldd", path], capture_output=True, text=True)
    return "static" if proc.returncode != 0 or "not a dynamic" in proc.stdout + proc.stderr else ""


def os_xml() -> str:
    return (f"<kernel>{kernel_path()}</kernel><initrd>{initrd_path()}</initrd>"
            f"<cmdline>console=ttyS0 quiet loglevel=0</cmdline>")
