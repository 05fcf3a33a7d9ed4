"""The NFS wizard against the real lab: NFS-Ganesha on one lab host serving the other two.

Real down to the hosts: the portal's services and jobs (in-process), SSH sessions with pinned
keys, the lab's rpcbind + nfs-ganesha answering showmount, the lab's NFS client mount, libvirt
storage pools. What the lab cannot run: the kernel NFS server (this kernel has no nfsd) — that
path is covered by tests/unit/storage/test_storage_plan.py only.

Each test uses its own export and mount paths and undoes everything it changed on the hosts
(ganesha.conf and fstab restored from the wizard's own first backup, mounts, pools, services it
started, directories, backups), because other engineers use the lab at the same time.
"""

from __future__ import annotations

import shlex
import time

import pytest
from django.core.management import CommandError, call_command

from core.actors import Actor
from core.models import Job
from hosts.adapters import ssh as ssh_adapter
from storage import services
from storage.choices import SetupStatusChoices, ShareStatusChoices, StepStateChoices
from storage.models import Share, ShareSetup
from storage.steps import Command, plan_from_json

from lab_support import (  # noqa: F401 - fixtures used by name
    FSTAB,
    GANESHA_CONF,
    drop_block,
    fstab_backups,
    lab_share,
    listing,
    mtime,
    onboarded,
    sh,
    write,
)

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]


@pytest.fixture
def wire(monkeypatch):
    """Every command line that really goes over SSH: (address, shlex.join(argv), stdin)."""
    sent: list[tuple[str, str, str | None]] = []
    real_run = ssh_adapter.SSHSession.run

    def recording_run(self, argv, **kwargs):
        sent.append((self.target.address, shlex.join(argv), kwargs.get("stdin")))
        return real_run(self, argv, **kwargs)

    monkeypatch.setattr(ssh_adapter.SSHSession, "run", recording_run)
    return sent


READ_ONLY = ("cat", "stat", "findmnt", "ls", "dpkg-query", "rpm", "test", "systemctl", "ufw", "selinuxenabled", "getent")


def _plan_and_apply(share: Share | None, wire: list, *, create_kwargs: dict | None = None) -> tuple[ShareSetup, dict]:
    """Plan (the dry run), check it sent only read-only commands, then apply it; timings."""
    figures = {}
    wire.clear()
    start = time.monotonic()
    if share is None:
        share, setup, _job = services.share_create(**create_kwargs, actor=Actor.system())
    else:
        setup, _job = services.share_plan_request(share=share, actor=Actor.system())
    setup.refresh_from_db()
    figures["plan_s"] = time.monotonic() - start
    assert setup.status == SetupStatusChoices.PLANNED, (setup.status, setup.error, setup.plan.get("blockers"))
    assert all(line.split()[0] in READ_ONLY and line.split()[:2] != ["systemctl", "restart"] for _a, line, _s in wire), wire
    wire.clear()
    start = time.monotonic()
    services.share_apply_request(setup=setup, actor=Actor.system())
    setup.refresh_from_db()
    figures["apply_s"] = time.monotonic() - start
    return setup, figures


def test_wizard_sets_up_ganesha_on_one_lab_host_for_the_other_two(lab_share, wire, record_property):
    server, clients = lab_share["server"], lab_share["clients"]
    export, mount = lab_share["export"], lab_share["mount"]
    create = dict(server=server["name"], clients=[c["name"] for c in clients], export_path=export, mount_path=mount, nfs_version="4.1")

    # --- first run: everything to do
    setup, first = _plan_and_apply(None, wire, create_kwargs=create)
    apply_job = Job.objects.get(pk=setup.apply_job_id)
    assert setup.status == SetupStatusChoices.SUCCEEDED, (setup.error, setup.error_hint, apply_job.log[-20:])
    share = setup.share
    share.refresh_from_db()
    assert share.status == ShareStatusChoices.READY
    plan = plan_from_json(setup.plan)
    assert plan.summary["server_impl"] == "ganesha"
    assert set(plan.summary["families"].values()) == {"debian"}
    # The grid is green on every host, one row each.
    assert [row["host"] for row in setup.grid] == [server["name"], *sorted(c["name"] for c in clients)]
    assert all(row["ok"] for row in setup.grid), setup.grid
    assert all(row["mounted"] and row["same_file"] and row["qemu_rw"] for row in setup.grid)
    assert [row["pool"] for row in setup.grid] == [None] + [True] * len(clients)

    # --- the dry run is what ran: the commands that went over the wire, in order, are the
    # plan's probes and actions; the actions of every step that changed something are exactly
    # the plan's, and nothing else was changed.
    addresses = {h.address: h.name for h in lab_share["hosts"].values()}
    planned_probe_lines = {p.render().split("   #")[0] for s in (*plan.steps, *plan.proof) for p in (*s.check, *s.verify) if p.argv}
    expected_actions = []
    for step in (*plan.steps, *plan.proof):
        outcome = setup.outcomes.get(step.key) or setup.proof.get(step.key)
        assert outcome is not None, f"step {step.key} did not run"
        assert [r["line"] for r in outcome["records"] if r["phase"] == "check"] == [p.render() for p in step.check]
        if outcome["state"] == StepStateChoices.CHANGED:
            assert [r["line"] for r in outcome["records"] if r["phase"] == "action"] == [a.render() for a in step.actions]
            expected_actions += [(step.host, shlex.join(a.argv), a.stdin) for a in step.actions if isinstance(a, Command)]
        else:
            assert outcome["state"] == StepStateChoices.ALREADY_DONE, outcome
            assert not [r for r in outcome["records"] if r["phase"] == "action"]
    applied = [(addresses[a], line, stdin) for a, line, stdin in wire]
    actions_sent = [entry for entry in applied if entry[1] not in planned_probe_lines]
    assert actions_sent == expected_actions
    changed = [k for k, o in setup.outcomes.items() if o["state"] == StepStateChoices.CHANGED]
    assert f"{server['name']}:export-config" in changed and f"{server['name']}:serve" in changed

    # --- what the hosts say, asked behind the portal's back
    conf = sh(server, ["cat", GANESHA_CONF], check=True).stdout
    assert conf.count(f"# BEGIN vmportal export {export}") == 1
    for key in ("Path", "Pseudo"):
        assert f'{key} = "{export}";' in conf
    for line in ("Access_Type = RW;", "Squash = root_squash;", "Transports = TCP;", "Name = VFS;", "Access_Type = None;", "CLIENT {"):
        assert line in conf
    # Only the clients may mount: Ganesha does not even list the export to the server itself.
    assert export not in sh(server, ["showmount", "-e", "--no-headers", server["address"]]).stdout
    assert sh(server, ["stat", "-c", "%a", export], check=True).stdout.strip() == "2770"
    assert sh(server, ["systemctl", "is-active", "nfs-ganesha"]).stdout.strip() == "active"
    # /etc outside fstab and ganesha.conf is the lab hosts' shared root: count only this
    # setup's backups (its stamp), not what another run may have left there.
    backups_after_first = listing(server, "/etc/ganesha")
    assert len([n for n in backups_after_first if n.startswith("ganesha.conf.vmportal-") and n.endswith(setup.stamp)]) == 1
    for client in clients:
        assert export in sh(client, ["showmount", "-e", "--no-headers", server["address"]], check=True).stdout
        assert sh(client, ["findmnt", "-n", "-o", "FSTYPE", "--mountpoint", mount], check=True).stdout.strip() == "fuse.glusterfs"
        fstab = sh(client, ["cat", FSTAB], check=True).stdout
        assert fstab.count(f"{server['address']}:{export} {mount} nfs vers=4.1,_netdev 0 0") == 1
        pools = sh(client, ["virsh", "-c", "qemu:///system", "pool-info", plan.summary["pool_name"]], check=True).stdout
        assert "running" in pools and "yes" in pools.split("Autostart:")[1].splitlines()[0]
        assert not [n for n in listing(client, mount) if n.startswith(".vmportal-proof-")]
    # A file written through one client is the server's file (not a copy).
    sh(clients[0], ["sh", "-c", f"echo via-{clients[0]['name']} > {mount}/probe.txt"], check=True)
    assert sh(server, ["cat", f"{export}/probe.txt"], check=True).stdout.strip() == f"via-{clients[0]['name']}"
    sh(clients[0], ["rm", "-f", f"{mount}/probe.txt"], check=True)

    mtimes = {("server", GANESHA_CONF): mtime(server, GANESHA_CONF)}
    for client in clients:
        mtimes[(client["name"], FSTAB)] = mtime(client, FSTAB)
    client_backups = {c["name"]: fstab_backups(c) for c in clients}
    assert all(len({n for n in b if n.endswith(setup.stamp)}) == 1 for b in client_backups.values()), client_backups

    # --- second run: every step's check passes, no file is rewritten, no new backup
    setup2, second = _plan_and_apply(share, wire)
    assert setup2.status == SetupStatusChoices.SUCCEEDED, setup2.error
    states = {k: o["state"] for k, o in setup2.outcomes.items()}
    assert set(states.values()) == {StepStateChoices.ALREADY_DONE}, states
    assert len(states) == len(plan_from_json(setup2.plan).steps)
    assert all(row["ok"] for row in setup2.grid)
    assert mtime(server, GANESHA_CONF) == mtimes[("server", GANESHA_CONF)]
    assert listing(server, "/etc/ganesha") == backups_after_first
    for client in clients:
        assert mtime(client, FSTAB) == mtimes[(client["name"], FSTAB)]
        assert fstab_backups(client) == client_backups[client["name"]]
    # Only read-only probes and the proof's markers went over the wire the second time.
    plan2 = plan_from_json(setup2.plan)
    probe_lines = {p.render().split("   #")[0] for s in (*plan2.steps, *plan2.proof) for p in (*s.check, *s.verify) if p.argv}
    proof_actions = {shlex.join(a.argv) for s in plan2.proof for a in s.actions}
    writes = [line for _a, line, _s in wire if line not in probe_lines and line not in proof_actions]
    assert all(line.split()[0] in READ_ONLY for line in writes), writes

    # --- verify on demand
    job = services.share_verify_request(share=share, actor=Actor.system())
    job.refresh_from_db()
    share.refresh_from_db()
    assert job.status == "succeeded", (job.error, job.log[-10:])
    assert share.status == ShareStatusChoices.READY and all(row["ok"] for row in share.last_grid)

    figures = {
        "first_plan_s": round(first["plan_s"], 2), "first_apply_s": round(first["apply_s"], 2),
        "second_plan_s": round(second["plan_s"], 2), "second_apply_s": round(second["apply_s"], 2),
        "first_changed": len(changed), "steps": len(plan.steps),
    }
    record_property("storage_figures", figures)
    print("storage figures:", figures)


HOSTILE_PATHS = [
    "relative/path", "/srv/../etc", "/srv/with space", "/srv/it's", '/srv/"q"', "/srv/a;touch /srv/pwned",
    "/srv/$(touch /srv/pwned)", "/srv/`touch /srv/pwned`", "/srv/a\ntouch /srv/pwned", "/", "/etc", "/usr/lib",
    "/proc/1", "/sys/x", "/dev/shm/x", "/boot/x", "/bin/x", "/sbin/x", "/lib64/x", "/srv",
]


def test_hostile_input_reaches_no_lab_host(lab_share, wire):
    server, clients = lab_share["server"], lab_share["clients"]
    base = dict(server=server["name"], clients=[c["name"] for c in clients], export_path=lab_share["export"], mount_path=lab_share["mount"])
    cases = [{"export_path": p} for p in HOSTILE_PATHS] + [{"mount_path": p} for p in HOSTILE_PATHS] + [
        {"options": "rw,sync;touch /srv/pwned"}, {"options": "rw,no_such_option"}, {"options": "rw,$(reboot)"},
        {"options": "rw\nsync"}, {"export_to": "evil.example.com"}, {"export_to": "10.77.0.0/24;touch /srv/pwned"},
        {"export_to": "0.0.0.0/0"}, {"clients": [server["name"]]}, {"clients": [clients[0]["name"], server["name"]]},
        {"clients": ["nosuchhost"]}, {"options": "rw,no_root_squash"}, {"export_to": "*"},
    ]
    from django.core.exceptions import ValidationError

    for case in cases:
        with pytest.raises(ValidationError):
            services.share_create(**{**base, **case}, actor=Actor.system())
    for argv in (["--export", "/srv/a;touch /srv/pwned"], ["--mount", "/srv/$(touch /srv/pwned)"], ["--options", "rw;touch /srv/pwned"],
                 ["--clients", f"{clients[0]['name']},{server['name']}"], ["--export-to", "*"]):
        args = {"--server": server["name"], "--export": lab_share["export"], "--clients": ",".join(c["name"] for c in clients),
                "--mount": lab_share["mount"], **dict(zip(argv[::2], argv[1::2]))}
        with pytest.raises(CommandError) as caught:
            call_command("nfs_setup", *[x for kv in args.items() for x in kv], "--yes")
        assert caught.value.returncode == 2
    assert wire == []  # not one command went to any host
    assert not Share.objects.exists() and not Job.objects.filter(kind__startswith="share.").exists()
    for host in (server, *clients):
        for path in ("/srv/pwned", lab_share["export"], lab_share["mount"]):
            assert sh(host, ["test", "-e", path]).returncode != 0, (host["name"], path)
        assert not [n for n in listing(host, "/srv") | listing(host, "/mnt") if n.startswith(("a;", "$(", "`"))]
