"""In a real browser, without the lab: the host page of an unreachable host offers Recover guests;
the plan lists the guest with a shared disk and its destination, and the one with a local disk
and why; confirming needs the fencing tick; the recovery page follows the check and the item run
by the real worker (both hosts are unreachable local ports here, so the start fails and says so).
"""

from __future__ import annotations

import pytest
from e2e_support import console_errors, login
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

# Hosts at closed local ports: every connection is refused at once, nothing leaves the machine.
SEED = """
from core.encryption import encrypt_secret
from core.actors import Actor
from hosts.models import Host, HostFacts, VirtualDisk, VirtualMachine
from hosts.services import portal_key_get_or_create
portal_key_get_or_create(actor=Actor.system())
key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIeMgtDgCK1dGw5vjxsWkzLB3R8qaHH5+Rt0jZuZtcTn"
dead = Host.objects.create(name="kvm-dead", address="127.0.0.1", ssh_port=9, auth_method="portal_key",
    libvirt_uri="qemu+tcp://127.0.0.1:9/system", host_key=key, status="unreachable",
    last_error="127.0.0.1:9 refused the connection")
spare = Host.objects.create(name="kvm-spare", address="127.0.0.1", ssh_port=9, auth_method="portal_key",
    libvirt_uri="qemu+tcp://127.0.0.1:19/system", host_key=key, status="reachable")
HostFacts.objects.create(host=spare, arch="x86_64", memory_free_kib=8388608, memory_total_kib=16777216, cpus=4,
    domain_types=["qemu", "kvm"])
for name, storage in (("db-1", "shared"), ("hb-1", "local")):
    vm = VirtualMachine.objects.create(host=dead, uuid=__import__("uuid").uuid4(), name=name, state="running",
        memory_kib=131072, vcpus=1, arch="x86_64", domain_type="qemu",
        definition_encrypted=encrypt_secret("<domain type='qemu'><name>%s</name></domain>" % name))
    VirtualDisk.objects.create(vm=vm, target="vda", device="disk", source_type="file",
        source="/shared/%s.qcow2" % name, storage=storage)
print(dead.pk)
"""


def test_recover_guests_of_an_unreachable_host(page, portal, screenshots):
    dead_pk = portal.manage("shell", "-c", SEED).stdout.strip().splitlines()[-1]
    errors = console_errors(page)
    login(page, portal)
    page.goto(f"/hosts/{dead_pk}/")
    expect(page.locator("#host-recovery")).to_contain_text("does not answer")
    page.screenshot(path=screenshots / "recovery-host-page.png", full_page=True)
    page.click("#recover-guests")
    expect(page.locator("#recovery-moves")).to_contain_text("db-1")
    expect(page.locator("#recovery-moves")).to_contain_text("kvm-spare")
    expect(page.locator("#recovery-left")).to_contain_text("hb-1")
    expect(page.locator("#recovery-left")).to_contain_text("not on shared storage")
    page.screenshot(path=screenshots / "recovery-plan.png", full_page=True)

    page.click("#recovery-form button[type=submit]")  # without the tick
    expect(page.locator(".messages")).to_contain_text("Confirm that kvm-dead is powered off")
    page.check("#fenced")
    page.click("#recovery-form button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Recovery #")
    # The worker checks (no answer on SSH or libvirt), then the start on kvm-spare fails: unreachable too.
    expect(page.locator("#recovery-status")).to_contain_text("Failed", timeout=60_000)
    expect(page.locator("#recovery-items")).to_contain_text("refused")
    page.screenshot(path=screenshots / "recovery-detail.png", full_page=True)
    assert errors == []
