"""The wizard's pages: roles, form → plan (dry run) → apply → grid, failure and resume, host pages.

Jobs run in-process right after each commit; hosts are the fake world (tests/fakes/fleet.py).
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from core.choices import JobStatusChoices
from core.errors import PortalError
from core.models import AuditEvent, Job
from hosts.models import Host
from storage.choices import SetupStatusChoices, ShareStatusChoices, StorageJobKindChoices
from storage.models import Share, ShareSetup
from storage.nfs import ProofFailed

pytestmark = pytest.mark.django_db


def form_data(world, **overrides):
    ids = {h.name: h.pk for h in Host.objects.all()}
    data = {
        "server": ids["h3"], "clients": [ids["h1"], ids["h2"]], "export_path": "/srv/vmstore", "mount_path": "/mnt/vmstore",
        "options": "rw,sync,root_squash", "nfs_version": "4.1", "export_to": "", "server_impl": "",
    }
    data.update(overrides)
    return data


def create(client, world, capture, **overrides):
    with capture(execute=True):
        response = client.post(reverse("storage:share_create"), form_data(world, **overrides))
    return response


def writes(world) -> list[list[str]]:
    read_only = ("cat", "stat", "findmnt", "ls", "dpkg-query", "test", "systemctl", "ufw", "selinuxenabled", "getent", "showmount", "grep")
    return [c for h in world.hosts.values() for c in h.commands if c[0] not in read_only or c[:2] == ["systemctl", "restart"]]


def test_roles(viewer_client, operator_client, client, nfs_fleet):
    assert viewer_client.get(reverse("storage:share_list")).status_code == 200
    assert viewer_client.get(reverse("storage:share_create")).status_code == 403
    assert operator_client.post(reverse("storage:share_create"), {}).status_code == 403
    response = client.get(reverse("storage:share_list"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_wizard_happy_path_plan_then_apply_then_grid(admin_client, nfs_fleet, django_capture_on_commit_callbacks):
    page = admin_client.get(reverse("storage:share_create")).content.decode()
    assert "h1 (10.0.0.11)" in page and 'value="rw,sync,root_squash"' in page

    response = create(admin_client, nfs_fleet, django_capture_on_commit_callbacks)
    share = Share.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("storage:share_detail", args=[share.pk])
    setup = share.setups.get()
    assert setup.status == SetupStatusChoices.PLANNED
    assert writes(nfs_fleet) == []  # planning only read the hosts

    page = admin_client.get(response["Location"]).content.decode()
    assert "Dry run." in page and "Nothing has changed on any host yet." in page
    for text in ("systemctl restart nfs-ganesha", "mount -t nfs -o vers=4.1 10.0.0.13:/srv/vmstore /mnt/vmstore",
                 "chmod 2770 /srv/vmstore", "tee -a /etc/fstab", "virStoragePoolDefineXML", "Apply this plan", "NFS-Ganesha"):
        assert text in page, text
    assert "No active firewall" in page and "never runs setenforce 0" in page

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("storage:setup_apply", args=[share.pk, setup.pk]))
    assert response.status_code == 302
    setup.refresh_from_db()
    share.refresh_from_db()
    assert setup.status == SetupStatusChoices.SUCCEEDED and share.status == ShareStatusChoices.READY
    page = admin_client.get(reverse("storage:share_detail", args=[share.pk])).content.decode()
    grid = page.split('id="grid"')[1].split("</section>")[0]
    assert "all green" in grid and grid.count("✓ yes") == 11 and "✗" not in grid  # 3 hosts × 3 checks + 2 pools
    assert "already done" not in page.split('id="plan"')[1].split("</h2>")[0]  # first run: every step did something
    partial = admin_client.get(reverse("storage:share_body", args=[share.pk])).content.decode()
    assert 'id="grid"' in partial and "<html" not in partial
    # The share is on its hosts' pages.
    host_page = admin_client.get(reverse("hosts:host_detail", args=[Host.objects.get(name="h1").pk])).content.decode()
    assert "NFS shares" in host_page and "mounts it at" in host_page and str(share) in host_page
    server_page = admin_client.get(reverse("hosts:host_detail", args=[Host.objects.get(name="h3").pk])).content.decode()
    assert "exports" in server_page
    actions = list(AuditEvent.objects.filter(target_type="share").values_list("action", "result"))
    assert ("share.create", "ok") in actions and actions.count(("share.apply", "ok")) == 2  # requested, then finished


def test_failure_shows_the_step_output_and_fix_then_plan_again_resumes(admin_client, nfs_fleet, django_capture_on_commit_callbacks):
    create(admin_client, nfs_fleet, django_capture_on_commit_callbacks)
    share = Share.objects.get()
    setup = share.setups.get()
    nfs_fleet.hosts["h2"].fail_on["mount -t nfs"] = (32, "mount.nfs: access denied by server while mounting 10.0.0.13:/srv/vmstore")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("storage:setup_apply", args=[share.pk, setup.pk]))
    setup.refresh_from_db()
    share.refresh_from_db()
    assert setup.status == SetupStatusChoices.FAILED and setup.failed_step == "h2:mount"
    assert share.status == ShareStatusChoices.FAILED
    page = admin_client.get(reverse("storage:share_detail", args=[share.pk])).content.decode()
    failure = page.split('id="failure"')[1].split("</div>\n")[0]
    assert "h2 · Mount the share" in failure and "exited with status 32" in failure
    assert "access denied by server" in failure and "What to do:" in failure
    assert "Plan again" in page

    del nfs_fleet.hosts["h2"].fail_on["mount -t nfs"]
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("storage:share_plan", args=[share.pk]))
    second = share.setups.order_by("-pk").first()
    assert second.pk != setup.pk and second.status == SetupStatusChoices.PLANNED
    # The old plan can no longer be applied.
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("storage:setup_apply", args=[share.pk, setup.pk]), follow=True)
    assert "not a plan ready to apply" in response.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("storage:setup_apply", args=[share.pk, second.pk]))
    second.refresh_from_db()
    assert second.status == SetupStatusChoices.SUCCEEDED
    states = {k: o["state"] for k, o in second.outcomes.items()}
    assert states["h3:export-config"] == states["h1:mount"] == "already_done" and states["h2:mount"] == "changed"
    page = admin_client.get(reverse("storage:share_detail", args=[share.pk])).content.decode()
    assert re.search(r"already done</span>", page) and "all green" in page
    older = admin_client.get(reverse("storage:setup_detail", args=[share.pk, setup.pk])).content.decode()
    assert "An older setup" in older and "h2 · Mount the share" in older


def test_blocked_plan_cannot_be_applied(admin_client, nfs_fleet, django_capture_on_commit_callbacks):
    nfs_fleet.hosts["h1"].files["/etc/fstab"] += "nas:/vol /mnt/vmstore nfs defaults 0 0\n"
    create(admin_client, nfs_fleet, django_capture_on_commit_callbacks)
    share = Share.objects.get()
    setup = share.setups.get()
    assert setup.status == SetupStatusChoices.BLOCKED
    page = admin_client.get(reverse("storage:share_detail", args=[share.pk])).content.decode()
    assert "cannot run as it stands" in page and "already mounts something at /mnt/vmstore" in page
    assert "Apply this plan" not in page
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("storage:setup_apply", args=[share.pk, setup.pk]))
    assert writes(nfs_fleet) == []


def test_unreachable_host_fails_the_reading_not_the_page(admin_client, nfs_fleet, django_capture_on_commit_callbacks):
    nfs_fleet.hosts["h2"].reachable = False
    create(admin_client, nfs_fleet, django_capture_on_commit_callbacks)
    setup = ShareSetup.objects.get()
    assert setup.status == SetupStatusChoices.DETECT_FAILED and "refused the connection" in setup.error
    page = admin_client.get(reverse("storage:share_detail", args=[setup.share_id])).content.decode()
    assert "Could not read the hosts" in page and "Nothing was changed" in page


def test_verify_now_refreshes_the_grid(admin_client, nfs_fleet, django_capture_on_commit_callbacks):
    create(admin_client, nfs_fleet, django_capture_on_commit_callbacks)
    share = Share.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("storage:setup_apply", args=[share.pk, share.setups.get().pk]))
    del nfs_fleet.hosts["h1"].mounts["/mnt/vmstore"]
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("storage:share_verify", args=[share.pk]))
    share.refresh_from_db()
    assert share.status == ShareStatusChoices.DEGRADED
    rows = {row["host"]: row for row in share.last_grid}
    assert rows["h1"]["mounted"] is False and rows["h2"]["ok"] is False  # h2 cannot read h1's marker
    page = admin_client.get(reverse("storage:share_detail", args=[share.pk])).content.decode()
    assert "not green" in page and "✗ no" in page
    # The verify job failed as a PortalError: its message and default hint are on the job row.
    job = Job.objects.filter(kind=StorageJobKindChoices.VERIFY).get()
    assert job.status == JobStatusChoices.FAILED and job.error.startswith("The proof failed on ") and "h1" in job.error
    assert job.error_hint == ProofFailed.default_hint and issubclass(ProofFailed, PortalError)


def test_a_second_share_on_the_same_export_is_refused(admin_client, nfs_fleet, django_capture_on_commit_callbacks):
    create(admin_client, nfs_fleet, django_capture_on_commit_callbacks)
    response = create(admin_client, nfs_fleet, django_capture_on_commit_callbacks)
    assert response.status_code == 200 and "already a share of the inventory" in response.content.decode()
    assert Share.objects.count() == 1


def test_hosts_the_portal_may_not_contact_are_refused(admin_client, nfs_fleet, django_capture_on_commit_callbacks):
    Host.objects.filter(name="h2").update(host_key="", status="pending_trust")
    response = create(admin_client, nfs_fleet, django_capture_on_commit_callbacks)
    assert response.status_code == 200 and "may not connect to h2 yet" in response.content.decode()
    assert not Share.objects.exists() and nfs_fleet.all_commands() == []
    assert AuditEvent.objects.filter(action="share.create", result="refused").exists()


def test_an_existing_export_directory_changes_owner_and_mode_only_once_confirmed(admin_client, nfs_fleet,
                                                                                django_capture_on_commit_callbacks):
    server = nfs_fleet.hosts["h3"]
    server.dirs["/srv"] = (0, 0, "755")
    server.dirs["/srv/vmstore"] = (1000, 1000, "700")  # someone's directory already
    create(admin_client, nfs_fleet, django_capture_on_commit_callbacks)
    share = Share.objects.get()
    setup = share.setups.get()
    page = admin_client.get(reverse("storage:share_detail", args=[share.pk])).content.decode()
    banner = page.split('id="dir-change"')[1].split("</div>")[0]
    assert "1000:1000 700" in banner and "0:0 2770" in banner and 'name="confirm_dir_change"' in banner

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("storage:setup_apply", args=[share.pk, setup.pk]), follow=True)
    assert "would change the owner and mode of /srv/vmstore" in response.content.decode()
    setup.refresh_from_db()
    assert setup.status == SetupStatusChoices.PLANNED and server.dirs["/srv/vmstore"] == (1000, 1000, "700")
    assert writes(nfs_fleet) == []
    refused = AuditEvent.objects.get(action="share.apply", result="refused")
    assert refused.parameters["existing_dir_change"]["before"] == "1000:1000 700"

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("storage:setup_apply", args=[share.pk, setup.pk]), {"confirm_dir_change": "1"})
    setup.refresh_from_db()
    assert setup.status == SetupStatusChoices.SUCCEEDED and server.dirs["/srv/vmstore"] == (0, 0, "2770")
