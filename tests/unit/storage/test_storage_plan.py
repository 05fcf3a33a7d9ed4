"""Plan generation (storage.plan.build_plan) for both distribution families × both NFS servers.

Pure: facts in, steps out, no host. This is the only test of the kernel-NFS-server path —
the lab's kernel has no nfsd (nor an NFS client), so the lab integration test can only run
NFS-Ganesha; the Debian/RHEL × kernel/Ganesha matrix is checked here command by command.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

import pytest

from storage import plan as P
from storage.facts import EXPORTS, FSTAB, GANESHA_CONF, HostFacts, PathFacts, PoolFacts, distro_family, qemu_identity
from storage.steps import Command, LibvirtCall, plan_from_json, plan_to_json
from storage.validation import InventoryHost, validate_share_request

INVENTORY = [InventoryHost("srv", "192.0.2.10"), InventoryHost("kvm1", "192.0.2.11"), InventoryHost("kvm2", "192.0.2.12")]
STAMP, TOKEN = "20250102T030405Z", "feedface00112233"

DEBIAN = dict(os_id="debian", os_id_like="", os_pretty="Debian GNU/Linux 12")
UBUNTU = dict(os_id="ubuntu", os_id_like="debian", os_pretty="Ubuntu 24.04")
ROCKY = dict(os_id="rocky", os_id_like="rhel centos fedora", os_pretty="Rocky Linux 9.4")
FEDORA = dict(os_id="fedora", os_id_like="", os_pretty="Fedora 40")

SERVER_PACKAGES = {
    ("debian", "kernel"): ["nfs-kernel-server"],
    ("debian", "ganesha"): ["nfs-ganesha", "nfs-ganesha-vfs", "rpcbind"],
    ("rhel", "kernel"): ["nfs-utils"],
    ("rhel", "ganesha"): ["nfs-ganesha", "nfs-ganesha-vfs", "rpcbind"],
}
CLIENT_PACKAGES = {"debian": ["nfs-common"], "rhel": ["nfs-utils"]}
QEMU = {"debian": ("libvirt-qemu", "kvm", 64055, 107), "rhel": ("qemu", "qemu", 107, 107)}


def host(name: str, os: dict, *, role: str, installed=(), active=(), firewalld=False, ufw=False, selinux=False, files=None, paths=None, pools=()) -> HostFacts:
    family = distro_family(os["os_id"], os["os_id_like"])
    user, group, uid, gid = QEMU.get(family, QEMU["debian"])
    address = next(h.address for h in INVENTORY if h.name == name)
    default_files = {GANESHA_CONF: "# example\n", EXPORTS: "# /etc/exports\n"} if role == "server" else {FSTAB: "UUID=abc / ext4 defaults 0 1\n"}
    return HostFacts(
        name=name, address=address, **os,
        packages={p: True for p in installed},
        services={u: ("active" if u in active or (u == "firewalld" and firewalld) else "inactive") for u in ("nfs-ganesha", "nfs-server", "rpcbind", "firewalld")},
        ufw_active=ufw, selinux_enabled=selinux,
        qemu_user=user, qemu_group=group, qemu_uid=uid, qemu_gid=gid,
        files={**default_files, **(files or {})},
        paths=paths or {},
        pools=tuple(pools),
    )


def request(**overrides):
    args = dict(server="srv", clients=["kvm1", "kvm2"], export_path="/srv/vmstore", mount_path="/mnt/vmstore", inventory=INVENTORY)
    return validate_share_request(**{**args, **overrides})


def world(os: dict, impl: str, **server_kwargs) -> dict[str, HostFacts]:
    family = distro_family(os["os_id"], os["os_id_like"])
    return {
        "srv": host("srv", os, role="server", **server_kwargs),
        "kvm1": host("kvm1", os, role="client", installed=CLIENT_PACKAGES[family]),
        "kvm2": host("kvm2", os, role="client", installed=CLIENT_PACKAGES[family]),
    }


def commands(plan, key: str) -> list[str]:
    return [a.render().split("   #")[0] for a in plan.step(key).actions]


def probes(plan, key: str, phase="check") -> list[str]:
    return [p.render().split("   #")[0] for p in getattr(plan.step(key), phase)]


MATRIX = [
    (DEBIAN, "kernel"), (DEBIAN, "ganesha"), (UBUNTU, "kernel"), (UBUNTU, "ganesha"),
    (ROCKY, "kernel"), (ROCKY, "ganesha"), (FEDORA, "kernel"), (FEDORA, "ganesha"),
]


@pytest.mark.parametrize("os,impl", MATRIX, ids=[f"{o['os_id']}-{i}" for o, i in MATRIX])
def test_the_plan_for_each_family_and_server(os, impl):
    family = distro_family(os["os_id"], os["os_id_like"])
    facts = world(os, impl)
    plan = P.build_plan(request(server_impl=impl), facts, stamp=STAMP, token=TOKEN)
    assert not plan.blockers
    assert plan.summary["server_impl"] == impl and plan.summary["families"] == {"srv": family, "kvm1": family, "kvm2": family}

    # Packages: the family's tool and names, only what the role needs.
    server_pkgs = SERVER_PACKAGES[(family, impl)]
    if family == "debian":
        assert commands(plan, "srv:packages") == [
            "apt-get update", "env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends " + " ".join(server_pkgs)]
        assert probes(plan, "srv:packages") == ["dpkg-query -W '-f=${Package}=${db:Status-Status}\\n' " + " ".join(server_pkgs)]
        assert probes(plan, "kvm1:packages") == ["dpkg-query -W '-f=${Package}=${db:Status-Status}\\n' nfs-common"]
    else:
        assert commands(plan, "srv:packages") == ["dnf install -y " + " ".join(server_pkgs)]
        assert probes(plan, "srv:packages") == ["rpm -q --quiet " + " ".join(server_pkgs)]
        assert probes(plan, "kvm1:packages") == ["rpm -q --quiet nfs-utils"]

    # The export directory belongs to QEMU's user on the clients, mode 2770 (never 777).
    _u, _g, uid, gid = QEMU[family]
    assert commands(plan, "srv:export-dir") == ["mkdir -p /srv/vmstore", f"chown {uid}:{gid} /srv/vmstore", "chmod 2770 /srv/vmstore"]
    assert probes(plan, "srv:export-dir") == ["stat -c '%u:%g %a' /srv/vmstore"]

    # The export: /etc/exports + exportfs -ra, or a Ganesha EXPORT block + restart.
    edit = plan.step("srv:export-config")
    conf = EXPORTS if impl == "kernel" else GANESHA_CONF
    assert commands(plan, "srv:export-config") == [f"cp -a {conf} {conf}.vmportal-srv-{STAMP}", f"tee -a {conf}"]
    block = edit.actions[-1].stdin
    if impl == "kernel":
        assert block == (
            "# BEGIN vmportal export /srv/vmstore\n"
            "/srv/vmstore 192.0.2.11(rw,sync,root_squash) 192.0.2.12(rw,sync,root_squash)\n"
            "# END vmportal export /srv/vmstore\n"
        )
        assert commands(plan, "srv:nfs-server") == ["systemctl enable --now nfs-server"]
        assert commands(plan, "srv:serve") == ["exportfs -ra"]
        assert "srv:rpcbind" not in {s.key for s in plan.steps}
    else:
        for line in ('Path = "/srv/vmstore";', 'Pseudo = "/srv/vmstore";', "Access_Type = RW;", "Squash = root_squash;",
                     "Clients = 192.0.2.11, 192.0.2.12;", "Protocols = 3, 4;", "Transports = TCP;", "Name = VFS;",
                     "Export_Id = 1000;"):
            assert line in block, line
        # Who may mount is a CLIENT sub-block (Ganesha ignores Clients at the EXPORT level); the
        # export itself grants nothing.
        export_level = block.split("CLIENT {")[0]
        assert "    Access_Type = None;" in export_level and "Clients" not in export_level
        assert "    CLIENT {\n        Clients = 192.0.2.11, 192.0.2.12;\n        Access_Type = RW;\n    }" in block
        assert block.startswith("# BEGIN vmportal export /srv/vmstore\n") and block.endswith("# END vmportal export /srv/vmstore\n")
        assert commands(plan, "srv:rpcbind") == ["systemctl enable --now rpcbind"]
        assert commands(plan, "srv:serve") == ["systemctl enable nfs-ganesha", "systemctl restart nfs-ganesha"]
    serve = plan.step("srv:serve")
    assert serve.after_change_of == ("srv:export-config",)
    if impl == "kernel":
        assert probes(plan, "srv:serve") == probes(plan, "srv:serve", "verify") == ["exportfs -s"]
    else:  # Ganesha answers showmount only to allowed clients: the server checks its daemon instead
        assert probes(plan, "srv:serve") == ["systemctl is-active nfs-ganesha", "find /etc/ganesha/ganesha.conf -newer /run/ganesha/ganesha.pid"]
        assert probes(plan, "srv:serve", "verify")[-1] == "rpcinfo -p"

    # Clients: showmount gate, mount point, mount, fstab, pool.
    for client in ("kvm1", "kvm2"):
        assert plan.step(f"{client}:sees-export").is_gate
        assert probes(plan, f"{client}:sees-export") == ["showmount -e --no-headers 192.0.2.10"]
        assert commands(plan, f"{client}:mount-dir") == ["mkdir -p /mnt/vmstore"]
        assert commands(plan, f"{client}:mount") == ["mount -t nfs -o vers=4.1 192.0.2.10:/srv/vmstore /mnt/vmstore"]
        fstab = plan.step(f"{client}:fstab")
        assert commands(plan, f"{client}:fstab") == [f"cp -a /etc/fstab /etc/fstab.vmportal-{client}-{STAMP}", "tee -a /etc/fstab"]
        assert fstab.actions[-1].stdin == (
            "# BEGIN vmportal mount /mnt/vmstore\n192.0.2.10:/srv/vmstore /mnt/vmstore nfs vers=4.1,_netdev 0 0\n# END vmportal mount /mnt/vmstore\n"
        )
        define = plan.step(f"{client}:pool-define").actions[0]
        assert isinstance(define, LibvirtCall) and "<path>/mnt/vmstore</path>" in define.xml and "type='dir'" in define.xml
        assert [a.op for s in ("pool-autostart", "pool-start") for a in plan.step(f"{client}:{s}").actions] == ["pool_autostart", "pool_start"]

    # Never: turning a firewall or SELinux off, or world-writable modes.
    everything = [shlex.join(a.argv) for s in (*plan.steps, *plan.proof) for a in s.actions if isinstance(a, Command)]
    for forbidden in ("setenforce", "systemctl stop", "systemctl disable", "ufw disable", "chmod 777", "chmod 0777", "chmod a+w", "iptables -F"):
        assert not [c for c in everything if forbidden in c], forbidden
    # The server is first, then each client in turn.
    hosts_in_order = [s.host for s in plan.steps]
    assert hosts_in_order == sorted(hosts_in_order, key=["srv", "kvm1", "kvm2"].index)


@pytest.mark.parametrize("impl", ["kernel", "ganesha"])
def test_firewalld_is_opened_never_stopped_and_selinux_gets_a_boolean(impl):
    facts = world(ROCKY, impl, firewalld=True)
    facts = {**facts, **{c: replace(facts[c], selinux_enabled=True) for c in ("kvm1", "kvm2")}}
    plan = P.build_plan(request(server_impl=impl), facts, stamp=STAMP, token=TOKEN)
    assert commands(plan, "srv:firewall") == [
        "firewall-cmd --permanent --add-service=nfs --add-service=rpc-bind --add-service=mountd", "firewall-cmd --reload"]
    assert "firewall-cmd --permanent --query-service=nfs" in probes(plan, "srv:firewall")
    assert "firewall-cmd --query-service=mountd" in probes(plan, "srv:firewall")
    keys = [s.key for s in plan.steps]
    assert keys.index("srv:firewall") < keys.index("srv:serve") < keys.index("kvm1:sees-export")
    assert commands(plan, "kvm1:selinux") == ["setsebool -P virt_use_nfs 1"]
    assert probes(plan, "kvm1:selinux") == ["getsebool virt_use_nfs"]


def test_no_firewall_and_no_selinux_means_no_steps_only_notes():
    plan = P.build_plan(request(), world(DEBIAN, "ganesha"), stamp=STAMP, token=TOKEN)
    keys = {s.key for s in plan.steps}
    assert not {"srv:firewall", "srv:ufw", "kvm1:selinux", "kvm2:selinux"} & keys
    texts = [n.text for n in plan.notes]
    assert any("No active firewall" in t and "never stops a firewall" in t for t in texts)
    assert any("SELinux is not enabled" in t and "never runs setenforce 0" in t for t in texts)


def test_ufw_rules_only_for_the_allowed_clients():
    plan = P.build_plan(request(server_impl="ganesha"), world(DEBIAN, "ganesha", ufw=True), stamp=STAMP, token=TOKEN)
    rules = commands(plan, "srv:ufw")
    assert "ufw allow proto tcp from 192.0.2.11 to any port 2049" in rules
    assert "ufw allow proto udp from 192.0.2.12 to any port 20048" in rules
    assert not [r for r in rules if "from any" in r]
    assert any(n.level == "warning" and "MNT_Port = 20048" in n.text for n in plan.notes)
    kernel = P.build_plan(request(server_impl="kernel"), world(DEBIAN, "kernel", ufw=True), stamp=STAMP, token=TOKEN)
    assert any(n.level == "warning" and "[mountd] port=20048" in n.text for n in kernel.notes)


def test_options_and_clients_reach_the_config():
    args = dict(options="rw,async,no_root_squash,anonuid=107,anongid=107,sec=sys:krb5", export_to="kvm1, 192.0.2.0/24",
                confirm_risky=True, nfs_version="3")
    kernel = P.build_plan(request(**args, server_impl="kernel"), world(DEBIAN, "kernel"), stamp=STAMP, token=TOKEN)
    line = kernel.step("srv:export-config").actions[-1].stdin.splitlines()[1]
    assert line == "/srv/vmstore 192.0.2.11(rw,async,no_root_squash,anonuid=107,anongid=107,sec=sys:krb5) 192.0.2.0/24(rw,async,no_root_squash,anonuid=107,anongid=107,sec=sys:krb5)"
    assert commands(kernel, "kvm1:mount") == ["mount -t nfs -o vers=3 192.0.2.10:/srv/vmstore /mnt/vmstore"]
    ganesha = P.build_plan(request(**args, server_impl="ganesha"), world(DEBIAN, "ganesha"), stamp=STAMP, token=TOKEN)
    block = ganesha.step("srv:export-config").actions[-1].stdin
    for text in ("Squash = no_root_squash;", "Anonymous_Uid = 107;", "Clients = 192.0.2.11, 192.0.2.0/24;", "SecType = sys, krb5;"):
        assert text in block
    assert any("async" in n.text for n in ganesha.notes)  # not a Ganesha option: said so
    assert any(n.level == "warning" and "no_root_squash" in n.text for n in ganesha.notes)


def test_qemu_as_root_with_root_squash_is_warned_about():
    facts = world(DEBIAN, "ganesha")
    facts = {**facts, **{c: replace(facts[c], qemu_user="root", qemu_group="root", qemu_uid=0, qemu_gid=0) for c in ("kvm1", "kvm2")}}
    plan = P.build_plan(request(), facts, stamp=STAMP, token=TOKEN)
    assert commands(plan, "srv:export-dir")[1] == "chown 0:0 /srv/vmstore"
    assert any(n.level == "warning" and "maps root to nobody" in n.text for n in plan.notes)


def test_existing_block_of_ours_is_replaced_not_duplicated():
    old = "# BEGIN vmportal export /srv/vmstore\n/srv/vmstore 192.0.2.11(ro)\n# END vmportal export /srv/vmstore\n"
    facts = world(DEBIAN, "kernel", files={EXPORTS: "/other 10.0.0.1(rw)\n" + old})
    plan = P.build_plan(request(server_impl="kernel"), facts, stamp=STAMP, token=TOKEN)
    assert commands(plan, "srv:export-config") == [
        f"cp -a /etc/exports /etc/exports.vmportal-srv-{STAMP}",
        "sed -i -e '\\%^# BEGIN vmportal export /srv/vmstore$%,\\%^# END vmportal export /srv/vmstore$%d' /etc/exports",
        "tee -a /etc/exports",
    ]
    # A file without a final newline gets one before our block; a missing file gets no backup.
    facts = world(DEBIAN, "kernel", files={EXPORTS: "/other 10.0.0.1(rw)"})
    plan = P.build_plan(request(server_impl="kernel"), facts, stamp=STAMP, token=TOKEN)
    assert plan.step("srv:export-config").actions[-1].stdin.startswith("\n# BEGIN vmportal export")
    facts = world(DEBIAN, "kernel", files={EXPORTS: None})
    plan = P.build_plan(request(server_impl="kernel"), facts, stamp=STAMP, token=TOKEN)
    assert commands(plan, "srv:export-config") == ["tee -a /etc/exports"]


BLOCKERS = [
    ("kernel server running next to ganesha", dict(impl="ganesha", server=dict(active=("nfs-server",))), "cannot serve next to it"),
    ("someone else's export line", dict(impl="kernel", server=dict(files={EXPORTS: "/srv/vmstore *(rw)\n"})), "already exports /srv/vmstore"),
    ("someone else's Ganesha export", dict(impl="ganesha", server=dict(files={GANESHA_CONF: 'EXPORT { Export_Id = 1; Path = "/srv/vmstore"; }\n'})), "outside VMPortal's block"),
    ("export path is a file", dict(impl="kernel", server=dict(paths={"/srv/vmstore": PathFacts(exists=True, is_dir=False)})), "is not a directory"),
    ("unknown distribution", dict(impl="kernel", server_os=dict(os_id="arch", os_id_like="", os_pretty="Arch Linux")), "only Debian/Ubuntu and RHEL"),
    ("mount path busy", dict(impl="kernel", client=dict(paths={"/mnt/vmstore": PathFacts(exists=True, is_dir=True, mount_fstype="ext4", mount_source="/dev/sdb1")})), "already has /dev/sdb1"),
    ("mount path not empty", dict(impl="kernel", client=dict(paths={"/mnt/vmstore": PathFacts(exists=True, is_dir=True, entries=3)})), "would hide them"),
    ("foreign fstab entry", dict(impl="kernel", client=dict(files={FSTAB: "nas:/vol /mnt/vmstore nfs defaults 0 0\n"})), "already mounts something"),
    ("pool over the mount path", dict(impl="kernel", client=dict(pools=[PoolFacts("images2", "/mnt/vmstore", True, True)])), "one pool per directory"),
    ("our pool name elsewhere", dict(impl="kernel", client=dict(pools=[PoolFacts("vmportal-mnt-vmstore", "/var/x", True, True)])), "already has a pool vmportal-mnt-vmstore over /var/x"),
    ("not root", dict(impl="kernel", server_user="admin"), "needs root"),
]


@pytest.mark.parametrize("case,spec,message", BLOCKERS, ids=[b[0] for b in BLOCKERS])
def test_blockers_stop_the_plan_before_any_step(case, spec, message):
    facts = world(DEBIAN, spec["impl"])
    server_os = spec.get("server_os")
    facts["srv"] = host("srv", server_os or DEBIAN, role="server", **spec.get("server", {}))
    if "server_user" in spec:
        facts["srv"] = replace(facts["srv"], ssh_user=spec["server_user"])
    if "client" in spec:
        facts["kvm2"] = host("kvm2", DEBIAN, role="client", installed=["nfs-common"], **spec["client"])
    plan = P.build_plan(request(server_impl=spec["impl"]), facts, stamp=STAMP, token=TOKEN)
    assert plan.steps == () and plan.proof == ()
    assert any(message in b for b in plan.blockers), plan.blockers


def test_clients_disagreeing_on_qemu_ids_block():
    facts = world(DEBIAN, "kernel")
    facts["kvm2"] = replace(facts["kvm2"], qemu_uid=999)
    assert any("different numeric users" in b for b in P.build_plan(request(), facts, stamp=STAMP, token=TOKEN).blockers)


def test_plan_survives_json_round_trip_unchanged():
    plan = P.build_plan(request(), world(ROCKY, "ganesha", firewalld=True), stamp=STAMP, token=TOKEN)
    assert plan_from_json(plan_to_json(plan)) == plan


def test_proof_runs_as_qemus_user_everywhere_and_cleans_up():
    plan = P.build_plan(request(), world(DEBIAN, "ganesha"), stamp=STAMP, token=TOKEN)
    keys = [s.key for s in plan.proof]
    assert keys[:3] == ["srv:proof-mounted", "kvm1:proof-mounted", "kvm2:proof-mounted"] and keys[-3:] == ["srv:proof-cleanup", "kvm1:proof-cleanup", "kvm2:proof-cleanup"]
    write = plan.step("kvm1:proof-write").actions[0]
    assert write.argv == ("runuser", "-u", "libvirt-qemu", "--", "tee", f"/mnt/vmstore/.vmportal-proof-{TOKEN}-kvm1")
    server_write = plan.step("srv:proof-write").actions[0]
    assert server_write.argv[:5] == ("setpriv", "--reuid=64055", "--regid=107", "--clear-groups", "--")
    reads = probes(plan, "kvm2:proof-read")
    assert reads == [f"runuser -u libvirt-qemu -- cat /mnt/vmstore/.vmportal-proof-{TOKEN}-srv",
                     f"runuser -u libvirt-qemu -- cat /mnt/vmstore/.vmportal-proof-{TOKEN}-kvm1"]


# ---------------------------------------------------------------- small decisions


@pytest.mark.parametrize("os_id,like,family", [
    ("debian", "", "debian"), ("ubuntu", "debian", "debian"), ("linuxmint", "ubuntu debian", "debian"),
    ("rhel", "fedora", "rhel"), ("fedora", "", "rhel"), ("centos", "rhel fedora", "rhel"), ("rocky", "rhel centos fedora", "rhel"),
    ("almalinux", "rhel centos fedora", "rhel"), ("ol", "fedora", "rhel"), ("arch", "", None), ("opensuse-leap", "suse opensuse", None),
])
def test_distro_family(os_id, like, family):
    assert distro_family(os_id, like) == family


@pytest.mark.parametrize("requested,installed,active,binaries,expected", [
    ("kernel", ["nfs-ganesha"], [], [], "kernel"),
    ("", [], ["nfs-ganesha"], [], "ganesha"),
    ("", ["nfs-ganesha"], ["nfs-server"], [], "kernel"),
    ("", ["nfs-ganesha"], [], [], "ganesha"),
    ("", [], [], ["/usr/bin/ganesha.nfsd"], "ganesha"),
    ("", ["nfs-kernel-server"], [], [], "kernel"),
    ("", [], [], [], "kernel"),
])
def test_server_implementation(requested, installed, active, binaries, expected):
    facts = replace(host("srv", DEBIAN, role="server", installed=installed, active=active), binaries={b: True for b in binaries})
    assert P.server_implementation(requested, facts)[0] == expected


@pytest.mark.parametrize("fstype,source,expected", [
    ("nfs4", "192.0.2.10:/srv/vmstore", True), ("nfs", "192.0.2.10:/srv/vmstore/", True),
    ("nfs4", "192.0.2.99:/srv/vmstore", False), ("ext4", "/dev/sdb1", False), ("", "", False),
    ("fuse.glusterfs", "/var/lab/hosts/h3/srv/vmstore", True),  # the lab's NFS client; the proof checks identity
])
def test_mount_matches(fstype, source, expected):
    assert P.mount_matches(fstype, source, "192.0.2.10:/srv/vmstore") is expected


@pytest.mark.parametrize("address,expected", [
    ("192.0.2.10", "192.0.2.10:/srv/x"), ("nas.example.org", "nas.example.org:/srv/x"), ("2001:db8::1", "[2001:db8::1]:/srv/x"),
])
def test_nfs_source(address, expected):
    assert P.nfs_source(address, "/srv/x") == expected


@pytest.mark.parametrize("text,expected", [
    (None, 1000), ("", 1000), ("EXPORT { Export_Id = 1000; }\nEXPORT { Export_Id = 1001; }\n", 1002),
    ("#EXPORT { Export_Id = 1000; }\n", 1000),
    ("# BEGIN vmportal export /srv/vmstore\nEXPORT {\n    Export_Id = 1007;\n}\n# END vmportal export /srv/vmstore\nEXPORT { Export_Id = 1000; }\n", 1007),
])
def test_choose_export_id(text, expected):
    assert P.choose_export_id(text, "/srv/vmstore") == expected


@pytest.mark.parametrize("conf,family,expected", [
    ('user = "root"\ngroup = "root"\n', "debian", ("root", "root")),
    ('#user = "root"\n#group = "root"\n', "debian", ("libvirt-qemu", "kvm")),
    ("", "rhel", ("qemu", "qemu")),
    (None, "rhel", ("qemu", "qemu")),
    ('user = "+107"   # numeric\n', "rhel", ("+107", "qemu")),
])
def test_qemu_identity(conf, family, expected):
    assert qemu_identity(conf, family) == expected


def test_pool_name_and_managed_block():
    assert P.pool_name_for("/mnt/vm store") == "vmportal-mnt-vm-store"
    text = "a\n# BEGIN vmportal mount /m\nx\n# END vmportal mount /m\nb\n"
    assert P.managed_block(text, "mount", "/m") == "# BEGIN vmportal mount /m\nx\n# END vmportal mount /m\n"
    assert P.managed_block(text, "mount", "/other") is None
    assert P.foreign_fstab_entries(text + "srv:/x /m nfs defaults 0 0\n", "/m") == ["srv:/x /m nfs defaults 0 0"]
    assert P.foreign_fstab_entries(text, "/m") == []


def _plan_with_export_dir(path_facts):
    facts = world(DEBIAN, "kernel", paths={"/srv/vmstore": path_facts} if path_facts else None)
    return P.build_plan(request(server_impl="kernel"), facts, stamp=STAMP, token=TOKEN)


def test_a_new_export_directory_is_created_without_a_change_to_confirm():
    plan = _plan_with_export_dir(None)
    assert plan.summary["existing_dir_change"] is None
    assert plan.step("srv:export-dir").title == "Create the export directory for QEMU"


def test_an_existing_directory_whose_owner_or_mode_would_change_shows_before_and_after():
    plan = _plan_with_export_dir(PathFacts(exists=True, is_dir=True, uid=0, gid=0, mode="700", entries=2))
    change = plan.summary["existing_dir_change"]
    assert change == {"host": "srv", "path": "/srv/vmstore", "before": "0:0 700", "after": "64055:107 2770"}
    step = plan.step("srv:export-dir")
    assert "0:0 700" in step.why and "64055:107 2770" in step.why and "confirmed" in step.why
    warnings = [n.text for n in plan.notes if n.level == "warning"]
    assert any("0:0 700" in w and "64055:107 2770" in w and "Confirm" in w for w in warnings)
    # The change survives the plan's JSON form, which is what the apply reads.
    assert plan_from_json(plan_to_json(plan)).summary["existing_dir_change"] == change


def test_an_existing_directory_that_already_belongs_to_qemu_needs_no_confirmation():
    plan = _plan_with_export_dir(PathFacts(exists=True, is_dir=True, uid=64055, gid=107, mode="2770"))
    assert plan.summary["existing_dir_change"] is None
