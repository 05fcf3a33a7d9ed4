"""Running plans (storage.runner) against the fake world of tests/unit/storage/storage_fakes.py.

Facts are gathered by the real storage.facts code, plans built by storage.plan, steps run by
storage.runner; only the hosts are fakes that interpret the commands. Checks: idempotence (a
second run changes nothing), the dry run is what runs, failures stop with output and a fix,
resume skips what is done, a changed export restarts the server, the proof catches a host that
sees something else.
"""

from __future__ import annotations

import shlex

import pytest
from storage_fakes import ROCKY_OS, FakeChannel, FakeHost, FakeWorld, debian_lab_world

from core.errors import PortalError
from storage import libvirt_pool, proof
from storage.choices import StepStateChoices
from storage.facts import EXPORTS, FSTAB, GANESHA_CONF, PoolFacts, gather_host_facts
from storage.plan import build_plan
from storage.runner import StepFailed, judge, run_proof, run_steps
from storage.steps import (
    MATCH_CONTAINS, MATCH_EQUALS, MATCH_EXIT0, MATCH_EXIT_NONZERO, MATCH_LINE_FIELD, MATCH_LINES, MATCH_SHARED_MOUNT, MATCH_WORDS,
    Command, Probe,
)
from storage.validation import InventoryHost, validate_share_request

EXPORT, MOUNT = "/srv/vmstore", "/mnt/vmstore"


def request_for(world: FakeWorld, server="h3", clients=("h1", "h2"), **overrides):
    inventory = [InventoryHost(h.name, h.address) for h in world.hosts.values()]
    args = dict(server=server, clients=list(clients), export_path=EXPORT, mount_path=MOUNT, inventory=inventory)
    return validate_share_request(**{**args, **overrides})


def gather(world: FakeWorld, req) -> dict:
    facts = {}
    for name in [req.server.name, *(c.name for c in req.clients)]:
        fake = world.hosts[name]
        channel = FakeChannel(fake)
        server = name == req.server.name
        facts[name] = gather_host_facts(
            channel.run, name=name, address=fake.address, ssh_user="root",
            paths=[EXPORT] if server else [MOUNT], files=[GANESHA_CONF, EXPORTS] if server else [FSTAB],
            pools=None if server else (lambda c=channel: [PoolFacts(**p.__dict__) for p in libvirt_pool.list_pools(c.libvirt())]),
        )
    return facts


def run_once(world: FakeWorld, req, *, stamp="20250101T000000Z", token="t0k3n"):
    facts = gather(world, req)
    plan = build_plan(req, facts, stamp=stamp, token=token)
    assert not plan.blockers, plan.blockers
    channels = {name: FakeChannel(h) for name, h in world.hosts.items()}
    for host in world.hosts.values():
        host.calls.clear()
    outcomes = run_steps(plan.steps, channels, log=lambda _m: None)
    proof_outcomes = run_proof(plan.proof, channels, log=lambda _m: None)
    return plan, outcomes, proof.grid(plan.hosts(), proof_outcomes)


READ_ONLY = {"cat", "stat", "findmnt", "ls", "dpkg-query", "rpm", "test", "systemctl is-active", "ufw status", "getsebool", "find",
             "rpcinfo", "exportfs -s",
             "showmount", "grep", "firewall-cmd --query-service", "firewall-cmd --permanent --query-service", "getent", "selinuxenabled"}


def is_read_only(argv: list[str]) -> bool:
    line = shlex.join(argv)
    for prefix in ("runuser -u ", "setpriv "):
        if line.startswith(prefix):
            return argv[argv.index("--") + 1] == "cat"
    return any(line == ro or line.startswith(ro + " ") for ro in READ_ONLY)


def test_first_run_sets_up_second_run_changes_nothing():
    world = debian_lab_world()
    req = request_for(world)
    plan, outcomes, grid = run_once(world, req)
    assert all(row["ok"] for row in grid), grid
    assert {o.key: o.state for o in outcomes}["h3:export-config"] == StepStateChoices.CHANGED
    server, h1 = world.hosts["h3"], world.hosts["h1"]
    assert server.files[GANESHA_CONF].count(f"# BEGIN vmportal export {EXPORT}") == 1
    assert server.dirs[EXPORT] == (0, 0, "2770")
    assert h1.mounts[MOUNT] == ("nfs4", f"{server.address}:{EXPORT}")
    assert h1.conn.storagePoolLookupByName("vmportal-mnt-vmstore").isActive()
    # The dry run is what ran: the writes each host received are the plan's actions, in order.
    for name, host in world.hosts.items():
        planned = [list(a.argv) for s in (*plan.steps, *plan.proof) if s.host == name for a in s.actions
                   if isinstance(a, Command) and {o.key: o.state for o in outcomes}.get(s.key, StepStateChoices.CHANGED) == StepStateChoices.CHANGED]
        assert [c for c in host.calls if not is_read_only(c)] == planned, name

    before = {name: host.snapshot() for name, host in world.hosts.items()}
    plan2, outcomes2, grid2 = run_once(world, req, stamp="20250101T000500Z", token="again")
    assert {o.state for o in outcomes2} == {StepStateChoices.ALREADY_DONE}
    assert all(row["ok"] for row in grid2)
    after = {name: host.snapshot() for name, host in world.hosts.items()}
    for name in world.hosts:  # no file rewritten, no new backup, nothing (re)mounted
        assert after[name]["files"] == before[name]["files"], name
        assert after[name]["mtimes"] == {**before[name]["mtimes"], **{k: v for k, v in after[name]["mtimes"].items() if ".vmportal-proof-" in k}}
        assert after[name]["mounts"] == before[name]["mounts"]
    proof_writes = {shlex.join(a.argv) for s in plan2.proof for a in s.actions}
    writes = [shlex.join(c) for h in world.hosts.values() for c in h.calls if not is_read_only(c)]
    assert set(writes) <= proof_writes, set(writes) - proof_writes


def test_a_failing_step_stops_with_output_and_fix_and_resume_skips_what_is_done():
    world = debian_lab_world()
    req = request_for(world)
    world.hosts["h2"].fail_on["mount -t nfs"] = (32, "mount.nfs: access denied by server while mounting 10.0.0.13:/srv/vmstore")
    with pytest.raises(StepFailed) as caught:
        run_once(world, req)
    failure = caught.value
    assert isinstance(failure, PortalError)  # run_job and the pages handle it by type
    assert failure.outcome.key == "h2:mount"
    assert "exited with status 32" in failure.message and "h2" in failure.message
    assert "access denied by server" in failure.outcome.output
    assert "access denied by server" in failure.hint  # the step's own suggested fix explains it
    assert not [c for c in world.hosts["h2"].calls if c[:2] == ["tee", "-a"]]  # stopped: fstab untouched

    del world.hosts["h2"].fail_on["mount -t nfs"]
    _plan, outcomes, grid = run_once(world, req, stamp="20250101T000100Z")
    states = {o.key: o.state for o in outcomes}
    assert all(states[k] == StepStateChoices.ALREADY_DONE for k in ("h3:export-config", "h3:serve", "h1:mount", "h1:fstab", "h2:mount-dir"))
    assert states["h2:mount"] == states["h2:fstab"] == states["h2:pool-start"] == StepStateChoices.CHANGED
    assert all(row["ok"] for row in grid)


def test_changing_the_export_replaces_our_block_and_restarts_the_server():
    world = debian_lab_world()
    run_once(world, request_for(world))
    server = world.hosts["h3"]
    _plan, outcomes, grid = run_once(world, request_for(world, options="ro,sync,root_squash"), stamp="20250101T000200Z")
    states = {o.key: o for o in outcomes}
    assert states["h3:export-config"].state == StepStateChoices.CHANGED
    assert states["h3:serve"].state == StepStateChoices.CHANGED  # its own check saw the config newer than the daemon
    assert ["systemctl", "restart", "nfs-ganesha"] in server.calls
    conf = server.files[GANESHA_CONF]
    assert conf.count("# BEGIN vmportal export") == 1 and "Access_Type = RO;" in conf and "Access_Type = RW;" not in conf
    assert f"{GANESHA_CONF}.vmportal-h3-20250101T000200Z" in server.files  # the previous file, kept


def test_a_changed_exports_line_forces_exportfs_even_though_the_path_is_still_served():
    hosts = [FakeHost(name, f"10.1.0.{i}", os_release=ROCKY_OS, family="rhel", packages={"nfs-utils"},
                      files={"/etc/libvirt/qemu.conf": 'user = "qemu"\ngroup = "qemu"\n', FSTAB: "/dev/vda1 / xfs defaults 0 0\n"})
             for i, name in enumerate(("nas", "kvm1"), start=1)]
    world = FakeWorld(*hosts)
    run_once(world, request_for(world, server="nas", clients=("kvm1",)))
    _plan, outcomes, grid = run_once(world, request_for(world, server="nas", clients=("kvm1",), options="rw,async,root_squash"),
                                     stamp="20250101T000300Z")
    states = {o.key: o for o in outcomes}
    assert states["nas:export-config"].state == StepStateChoices.CHANGED
    serve = states["nas:serve"]
    assert serve.state == StepStateChoices.CHANGED and serve.forced_by == ["nas:export-config"]
    assert [r["phase"] for r in serve.records] == ["check", "action", "verify"] and serve.records[0]["ok"]  # check passed, ran anyway
    assert ["exportfs", "-ra"] in world.hosts["nas"].calls
    assert "(rw,async,root_squash)" in world.hosts["nas"].files[EXPORTS]
    assert all(row["ok"] for row in grid)


def test_the_proof_catches_a_client_that_sees_a_local_directory():
    world = debian_lab_world()
    req = request_for(world)
    plan, _outcomes, _grid = run_once(world, req)
    del world.hosts["h2"].mounts[MOUNT]  # unmounted behind the portal's back: /mnt/vmstore is a local dir again
    channels = {name: FakeChannel(h) for name, h in world.hosts.items()}
    outcomes = run_proof(plan.proof, channels, log=lambda _m: None)
    rows = {row["host"]: row for row in proof.grid(plan.hosts(), outcomes)}
    assert rows["h2"]["mounted"] is False and rows["h2"]["same_file"] is False and not rows["h2"]["ok"]
    assert rows["h3"]["same_file"] is False  # the server cannot read h2's marker either
    assert rows["h1"]["mounted"] is True and rows["h1"]["pool"] is True
    assert any("proof-t0k3n-h2" in p for p in rows["h3"]["unseen"])
    # Cleanup ran on every host anyway.
    assert all(outcomes[f"{h}:proof-cleanup"]["state"] == StepStateChoices.CHANGED for h in ("h1", "h2", "h3"))


def test_kernel_server_on_rocky_with_firewalld_and_selinux():
    conf = 'user = "qemu"\ngroup = "qemu"\n'
    hosts = [
        FakeHost(name, f"10.1.0.{i}", os_release=ROCKY_OS, family="rhel", packages={"nfs-utils"} if name != "nas" else set(),
                 units={"firewalld": "active"}, selinux=True, files={"/etc/libvirt/qemu.conf": conf, FSTAB: "/dev/vda1 / xfs defaults 0 0\n"})
        for i, name in enumerate(("nas", "kvm1", "kvm2"), start=1)
    ]
    world = FakeWorld(*hosts)
    req = request_for(world, server="nas", clients=("kvm1", "kvm2"))
    plan, outcomes, grid = run_once(world, req)
    states = {o.key: o.state for o in outcomes}
    assert plan.summary["server_impl"] == "kernel" and plan.summary["families"]["nas"] == "rhel"
    assert states["nas:packages"] == StepStateChoices.CHANGED and "nfs-utils" in world.hosts["nas"].packages
    assert states["nas:firewall"] == StepStateChoices.CHANGED
    assert world.hosts["nas"].firewalld_services == {"nfs", "rpc-bind", "mountd"}
    assert world.hosts["nas"].units["firewalld"] == "active"  # never stopped
    assert states["kvm1:selinux"] == StepStateChoices.CHANGED and world.hosts["kvm1"].sebool
    assert world.hosts["nas"].files[EXPORTS].splitlines()[1] == "/srv/vmstore 10.1.0.2(rw,sync,root_squash) 10.1.0.3(rw,sync,root_squash)"
    assert world.hosts["nas"].dirs[EXPORT] == (107, 107, "2770")
    assert all(row["ok"] for row in grid), grid
    _plan2, outcomes2, _grid2 = run_once(world, req, stamp="20250101T000900Z")
    assert {o.state for o in outcomes2} == {StepStateChoices.ALREADY_DONE}


JUDGE = [
    (Probe(argv=("x",)), 0, "", True),
    (Probe(argv=("x",)), 1, "", False),
    (Probe(argv=("x",), match=MATCH_EXIT_NONZERO), 1, "", True),
    (Probe(argv=("x",), match=MATCH_EQUALS, value="active"), 0, "active\n", True),
    (Probe(argv=("x",), match=MATCH_EQUALS, value="active"), 0, "inactive\n", False),
    (Probe(argv=("x",), match=MATCH_EQUALS, value="active"), 3, "active\n", False),
    (Probe(argv=("x",), match=MATCH_CONTAINS, value="B\nC\n"), 0, "A\nB\nC\nD\n", True),
    (Probe(argv=("x",), match=MATCH_LINE_FIELD, value="/srv/x"), 0, "/srv/xy (everyone)\n/srv/x 10.0.0.1\n", True),
    (Probe(argv=("x",), match=MATCH_LINE_FIELD, value="/srv/x"), 0, "/srv/xy (everyone)\n", False),
    (Probe(argv=("x",), match=MATCH_LINES, value="a=installed\nb=installed"), 0, "b=installed\na=installed\n", True),
    (Probe(argv=("x",), match=MATCH_LINES, value="a=installed\nb=installed"), 0, "a=installed\nb=not-installed\n", False),
    (Probe(argv=("x",), match=MATCH_WORDS, value="2049/tcp ALLOW 10.0.0.1"), 0, "2049/tcp     ALLOW     10.0.0.1\n", True),
    (Probe(argv=("x",), match=MATCH_SHARED_MOUNT, value="10.0.0.1:/srv/x"), 0, "nfs4 10.0.0.1:/srv/x\n", True),
    (Probe(argv=("x",), match=MATCH_SHARED_MOUNT, value="10.0.0.1:/srv/x"), 0, "ext4 /dev/sdb1\n", False),
    (Probe(argv=("x",), match=MATCH_SHARED_MOUNT, value="10.0.0.1:/srv/x"), 1, "", False),
    (Probe(argv=("x",), match=MATCH_EXIT0), 0, "anything", True),
]


@pytest.mark.parametrize("probe,status,stdout,expected", JUDGE)
def test_judge(probe, status, stdout, expected):
    assert judge(probe, status, stdout) is expected
