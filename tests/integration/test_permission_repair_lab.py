"""Permission repair on a real lab host: the owner and mode QEMU's user needs, audited, never 777.

The lab's QEMU runs as root (which can open anything), so the test names another user as
QEMU's (``nobody``), as a Debian host's ``libvirt-qemu`` would be: the file really changes
owner and mode on the host, and that user really can open it afterwards.
"""

from __future__ import annotations

import uuid

import pytest

from core.actors import Actor
from core.models import AuditEvent
from lab_support import onboarded, sh  # noqa: F401 - fixtures used by name
from migrations_app.gather import QemuIdentity
from migrations_app.models import MigrationPlan, PreflightRun
from migrations_app.permissions import repair_image_permissions
from migrations_app.services import refusals, repairs

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def test_repair_gives_the_image_to_qemus_user_and_audits_it(lab, onboarded):
    src_lab, dst_lab = lab["hosts"][0], lab["hosts"][1]
    src, dst = onboarded[src_lab["name"]], onboarded[dst_lab["name"]]
    path = f"/var/lib/libvirt/images/vmp-perm-{uuid.uuid4().hex[:6]}.qcow2"
    hostile = "/etc/shadow"
    sh(dst_lab, ["sh", "-c", 'umask 077; head -c 65536 /dev/zero > "$1"', "sh", path], check=True)
    shadow_before = sh(dst_lab, ["stat", "-c", "%U:%G %a", hostile], check=True).stdout
    try:
        assert sh(dst_lab, ["runuser", "-u", "nobody", "--", "test", "-r", path]).returncode != 0
        plan = MigrationPlan.objects.create(vm_uuid=uuid.uuid4(), vm_name="vmp-perm", source=src, options={})
        run = PreflightRun.objects.create(
            plan=plan, destination=dst, status="done", overall="fail",
            verdicts=[{"check": "storage", "status": "fail", "reason": f"QEMU on {dst.name} cannot open {path}",
                       "fix": "…", "repairs": [[path, "0660"], [hostile, "0660"]]}],
        )
        result = repair_image_permissions(run_id=run.pk, ctx=None,
                                          identity=QemuIdentity(user="nobody", group="nogroup", dynamic_ownership=True))
        assert result["repaired"] == [{"path": path, "before": "root:root 600", "after": "nobody:nogroup 660"}]
        assert sh(dst_lab, ["stat", "-c", "%U:%G %a", path], check=True).stdout.strip() == "nobody:nogroup 660"
        assert sh(dst_lab, ["runuser", "-u", "nobody", "--", "test", "-r", path, "-a", "-w", path]).returncode == 0
        # A path outside guest storage in the recorded verdicts is never touched.
        assert sh(dst_lab, ["stat", "-c", "%U:%G %a", hostile], check=True).stdout == shadow_before
        event = AuditEvent.objects.get(action="image.permissions")
        assert event.parameters["before"] == "root:root 600" and event.parameters["after"] == "nobody:nogroup 660"
        assert event.parameters["host"] == dst.name and event.result == "ok"
        # The destination is checked again afterwards.
        run.refresh_from_db()
        assert run.job is not None
    finally:
        sh(dst_lab, ["rm", "-f", path])


def test_nothing_to_repair_is_refused_and_audited(lab, onboarded):
    src, dst = onboarded[lab["hosts"][0]["name"]], onboarded[lab["hosts"][1]["name"]]
    plan = MigrationPlan.objects.create(vm_uuid=uuid.uuid4(), vm_name="vmp-perm", source=src, options={})
    run = PreflightRun.objects.create(plan=plan, destination=dst, status="done", overall="fail", verdicts=[
        {"check": "storage", "status": "fail", "reason": "r", "fix": "f",
         "repairs": [["/var/lib/x; rm -rf /", "0660"], ["/proc/1/mem", "0660"], ["/var/lib/y", "0777"]]},
    ])
    with pytest.raises(refusals.ServiceRefused) as refused:
        repairs.image_permissions_repair_request(run=run, actor=Actor.system())
    assert "no image" in refused.value.message
    assert AuditEvent.objects.filter(action="image.permissions.request", result="refused").count() == 1
