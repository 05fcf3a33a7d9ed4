"""`manage.py nfs_setup`: dry run, confirmation, --yes, --json, failure status, re-run."""

from __future__ import annotations

import builtins
import io
import json

import pytest
from django.core.management import CommandError, call_command

from storage.models import Share

pytestmark = pytest.mark.django_db

ARGS = ["--server", "h3", "--export", "/srv/vmstore", "--clients", "h1,h2", "--mount", "/mnt/vmstore"]


def run(*extra: str) -> str:
    out = io.StringIO()
    call_command("nfs_setup", *ARGS, *extra, stdout=out)
    return out.getvalue()


def writes(world) -> list[list[str]]:
    read_only = ("cat", "stat", "findmnt", "ls", "dpkg-query", "test", "systemctl", "ufw", "selinuxenabled", "getent", "showmount", "grep")
    return [c for h in world.hosts.values() for c in h.commands if c[0] not in read_only or c[:2] == ["systemctl", "restart"]]


def test_dry_run_prints_every_command_and_changes_nothing(nfs_fleet):
    out = run("--dry-run")
    for text in ("== h3", "== h1", "run:    systemctl restart nfs-ganesha", "run:    mount -t nfs -o vers=4.1 10.0.0.13:/srv/vmstore /mnt/vmstore",
                 "check:  stat -c '%u:%g %a' /srv/vmstore", "input:  # BEGIN vmportal export /srv/vmstore", "Dry run: nothing was changed."):
        assert text in out, text
    assert writes(nfs_fleet) == []


def test_without_yes_it_asks_and_a_no_changes_nothing(nfs_fleet, monkeypatch):
    monkeypatch.setattr(builtins, "input", lambda prompt: "n")
    with pytest.raises(CommandError) as caught:
        run()
    assert caught.value.returncode == 1 and "Not applied" in str(caught.value)
    assert writes(nfs_fleet) == []


def test_yes_applies_and_prints_the_grid_and_a_rerun_changes_nothing(nfs_fleet, monkeypatch):
    monkeypatch.setattr(builtins, "input", lambda prompt: "yes")
    out = run()
    assert "Done: h3:/srv/vmstore is ready." in out
    assert "▶ h1 · Mount the share" in out and "  $ mount -t nfs" in out  # the job's log, live
    grid = out.split("host ")[1]
    assert "h1" in grid and "NO" not in grid
    before = {n: h.snapshot() for n, h in nfs_fleet.hosts.items()}
    out = run("--yes")
    steps_part = out.split("Proof:")[0]
    assert steps_part.count("✓ already done, nothing to change") == 19 and steps_part.count("  ✓ yes") == 2  # + 2 showmount gates
    assert "  $ " not in steps_part
    assert {n: h.snapshot()["files"] for n, h in nfs_fleet.hosts.items()} == {n: s["files"] for n, s in before.items()}
    assert Share.objects.count() == 1


def test_json_report(nfs_fleet):
    out = run("--yes", "--json")
    report = json.loads(out)
    assert report["ok"] is True and report["status"] == "succeeded"
    assert [row["host"] for row in report["grid"]] == ["h3", "h1", "h2"] and all(row["ok"] for row in report["grid"])
    assert report["plan"]["summary"]["server_impl"] == "ganesha"
    assert report["plan"]["steps"][0]["actions"][0] == "apt-get update"


def test_failure_exits_non_zero_with_the_failing_step(nfs_fleet):
    nfs_fleet.hosts["h1"].fail_on["mount -t nfs"] = (32, "mount.nfs: access denied by server while mounting 10.0.0.13:/srv/vmstore")
    with pytest.raises(CommandError) as caught:
        run("--yes")
    message = str(caught.value)
    assert caught.value.returncode == 1
    assert "Mount the share" in message and "h1" in message and "access denied by server" in message and "What to do:" in message
    del nfs_fleet.hosts["h1"].fail_on["mount -t nfs"]
    assert "is ready" in run("--yes")  # the same command resumes


def test_blocked_plan_exits_non_zero(nfs_fleet):
    nfs_fleet.hosts["h2"].files["/etc/fstab"] += "nas:/vol /mnt/vmstore nfs defaults 0 0\n"
    with pytest.raises(CommandError) as caught:
        run("--yes")
    assert caught.value.returncode == 1 and "blocked" in str(caught.value)
    assert writes(nfs_fleet) == []


def test_other_settings_for_an_existing_share_are_refused(nfs_fleet):
    run("--dry-run")
    with pytest.raises(CommandError) as caught:
        run("--options", "ro,sync,root_squash", "--dry-run")
    assert caught.value.returncode == 2 and "exists with other settings" in str(caught.value)


def test_an_existing_export_directory_is_not_changed_without_confirm_dir_change(nfs_fleet):
    server = nfs_fleet.hosts["h3"]
    server.dirs["/srv"] = (0, 0, "755")
    server.dirs["/srv/vmstore"] = (1000, 1000, "700")
    with pytest.raises(CommandError) as caught:
        run("--yes")
    message = str(caught.value)
    assert caught.value.returncode == 1 and "Not applied" in message and "--confirm-dir-change" in message
    assert "1000:1000 700" in message and "0:0 2770" in message
    assert writes(nfs_fleet) == [] and server.dirs["/srv/vmstore"] == (1000, 1000, "700")
    out = run("--yes", "--confirm-dir-change")
    assert "Done: h3:/srv/vmstore is ready." in out and server.dirs["/srv/vmstore"] == (0, 0, "2770")
