"""What the NFS wizard accepts (storage.validation), as tables of cases."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from storage.validation import InventoryHost, parse_export_options, parse_export_to, path_problem, validate_share_request

INVENTORY = [InventoryHost("srv", "192.0.2.10"), InventoryHost("kvm1", "192.0.2.11"), InventoryHost("kvm2", "192.0.2.12"),
             InventoryHost("far", "198.51.100.7")]
CLIENTS = INVENTORY[1:3]

# /nfsdata: the recipe's own layout (a new top-level directory that is not a system tree).
GOOD_PATHS = ["/srv/vmstore", "/srv/vm-store_1.d", "/mnt/nfs/vmstore", "/var/lib/libvirt/images-nfs", "/data/a/b/c", "/nfsdata",
              "/vmstore", "/srv/a.b"]
BAD_PATHS = [
    ("", "absolute path"), ("srv/vmstore", "absolute path"), ("./srv", "absolute path"), ("/srv/../etc", "'..'"),
    ("/srv/a b", "a space"), ("/srv/a\tb", "a tab"), ("/srv/a\nb", "a newline"), ("/srv/it's", "a quote"), ('/srv/"x"', "a quote"),
    ("/srv/a;b", "';'"), ("/srv/$HOME", "'$'"), ("/srv/`id`", "a backtick"), ("/srv/$(id)", "'$'"), ("/srv/a\\b", "a backslash"),
    ("/srv/a|b", "'|'"), ("/srv/a&b", "'&'"), ("/srv/a*", "'*'"), ("/srv/a#b", "'#'"), ("/srv/a,b", "','"), ("/srv/a:b", "':'"),
    ("/srv/é", "the character"), ("/srv/a\x00b", "control character"), ("/srv//x", "without '.'"), ("/srv/x/", "without '.'"),
    ("/srv/./x", "without '.'"), ("/", "system directory"), ("/etc", "system directory"), ("/etc/ganesha", "system directory"),
    ("/usr", "system directory"), ("/usr/local/vm", "system directory"), ("/proc/1", "system directory"), ("/sys/x", "system directory"),
    ("/dev/shm/x", "system directory"), ("/boot/x", "system directory"), ("/bin/x", "system directory"), ("/sbin", "system directory"),
    ("/lib", "system directory"), ("/lib64/x", "system directory"), ("/lib32/x", "system directory"), ("/run/x", "system directory"),
    ("/tmp/x", "system directory"), ("/var/tmp/x", "system directory"), ("/srv", "top-level"), ("/mnt", "top-level"), ("/var", "top-level"),
    ("/opt", "top-level"), ("/home", "home directories"), ("/home/alice", "home directories"), ("/home/vm", "home directories"),
    ("/root", "home directories"), ("/root/.ssh", "home directories"), ("/srv/alice/.ssh", "hidden directory .ssh"),
    ("/data/.config/vm", "hidden directory .config"), ("/.nfs", "hidden directory"),
    ("/" + "a" * 250, "longer than"), (None, "absolute path"), (42, "absolute path"),
]


@pytest.mark.parametrize("path", GOOD_PATHS)
def test_good_paths(path):
    assert path_problem(path, what="export directory") is None


@pytest.mark.parametrize("path,message", BAD_PATHS, ids=[repr(p)[:30] for p, _ in BAD_PATHS])
def test_bad_paths_say_why(path, message):
    problem = path_problem(path, what="export directory")
    assert problem is not None and message in problem, problem


OPTIONS = [
    ("rw,sync,root_squash", "rw,sync,root_squash", None),
    (" rw , sync ", "rw,sync", None),
    ("ro,all_squash,anonuid=107,anongid=107", "ro,all_squash,anonuid=107,anongid=107", None),
    ("rw,no_subtree_check,sec=sys:krb5p", "rw,no_subtree_check,sec=sys:krb5p", None),
    ("", None, "Enter export options"),
    ("rw,ro", None, "contradict"),
    ("root_squash,no_root_squash", None, "contradict"),
    ("rw,rw", None, "given twice"),
    ("rw,,sync", None, "empty item"),
    ("rw,fsid=0", None, "Unknown export option"),
    ("rw,sync;reboot", None, "Unknown export option"),
    ("rw,$(reboot)", None, "Unknown export option"),
    ("rw\nsync", None, "Unknown export option"),
    ("rw,anonuid=-1", None, "Unknown export option"),
    ("rw,all_squash,anonuid=4294967294,anongid=4294967294", "rw,all_squash,anonuid=4294967294,anongid=4294967294", None),
    ("rw,anonuid=4294967295", None, "not a user or group id"),  # (uid_t)-1: no id at all
    ("rw,anonuid=9999999999", None, "not a user or group id"),
    ("rw,anongid=99999999999999999999", None, "not a user or group id"),
    ("rw,sec=none", None, "Unknown export option"),
    ("rw) *(rw,no_root_squash", None, "Unknown export option"),
]


@pytest.mark.parametrize("text,normalised,message", OPTIONS)
def test_export_options(text, normalised, message):
    options, problems = parse_export_options(text)
    if message is None:
        assert problems == [] and str(options) == normalised
    else:
        assert options is None and any(message in p for p in problems), problems


EXPORT_TO = [
    ("", ["192.0.2.11", "192.0.2.12"], None),
    ("kvm1 kvm2", ["192.0.2.11", "192.0.2.12"], None),
    ("KVM1,192.0.2.12", ["192.0.2.11", "192.0.2.12"], None),
    ("192.0.2.0/24", ["192.0.2.0/24"], None),
    ("192.0.2.0/24, kvm1", ["192.0.2.0/24", "192.0.2.11"], None),
    ("kvm1, kvm2, far", ["192.0.2.11", "192.0.2.12", "198.51.100.7"], None),
    ("*", ["*"], None),
    ("kvm1", None, "kvm2 would not be allowed to mount"),
    ("evil.example.com", None, "not a host of the inventory"),
    ("192.0.2.1/24", None, "not a valid network"),
    ("203.0.113.0/24", None, "contains no host of the inventory"),
    ("0.0.0.0/0", None, "wider than /8"),
    ("10.0.0.0/24;touch /tmp/x", None, "contain ';'"),
    ("kvm1(rw,no_root_squash)", None, "contain '('"),
    ("kvm1\nkvm2", None, "contain a newline"),
    ("kvm1.bad-name", None, "not a host of the inventory"),
]


@pytest.mark.parametrize("text,values,message", EXPORT_TO)
def test_export_to(text, values, message):
    specs, problems = parse_export_to(text, inventory=INVENTORY, clients=CLIENTS)
    if message is None:
        assert problems == [] and [s.value for s in specs] == values
    else:
        assert specs == () and any(message in p for p in problems), problems


def request(**overrides):
    args = dict(server="srv", clients=["kvm1", "kvm2"], export_path="/srv/vmstore", mount_path="/mnt/vmstore", inventory=INVENTORY)
    return validate_share_request(**{**args, **overrides})


def test_a_good_request_is_parsed():
    req = request(options="rw,sync,root_squash", nfs_version="4.2")
    assert req.server.address == "192.0.2.10" and [c.name for c in req.clients] == ["kvm1", "kvm2"]
    assert req.options.squash == "root_squash" and req.nfs_version == "4.2" and req.risks == ()


REQUEST_ERRORS = [
    (dict(server="nosuch"), "server", "Choose the NFS server"),
    (dict(clients=["srv", "kvm1"]), "clients", "is the server"),
    (dict(clients=["kvm1", "kvm1"]), "clients", "listed twice"),
    (dict(clients=["ghost"]), "clients", "not a host of the inventory"),
    (dict(clients=[]), "clients", "at least one client"),
    (dict(export_path="relative"), "export_path", "absolute"),
    (dict(mount_path="/etc/x"), "mount_path", "system directory"),
    (dict(nfs_version="5"), "nfs_version", "Choose an NFS version"),
    (dict(server_impl="samba"), "server_impl", "kernel, ganesha"),
    (dict(options="rw,no_root_squash"), "confirm_risky", "no_root_squash lets root"),
    (dict(export_to="*"), "confirm_risky", "any machine"),
    (dict(options="rw,root_squash,anonuid=0"), "confirm_risky", "anonuid=0 or anongid=0 maps squashed users to root"),
    (dict(options="rw,all_squash,anongid=0"), "confirm_risky", "the same as no_root_squash"),
    (dict(options="rw,anonuid=9999999999"), "options", "not a user or group id"),
]


@pytest.mark.parametrize("overrides,field,message", REQUEST_ERRORS)
def test_request_errors_are_keyed_by_field(overrides, field, message):
    with pytest.raises(ValidationError) as caught:
        request(**overrides)
    assert any(message in m for m in caught.value.message_dict[field]), caught.value.message_dict


def test_risky_choices_pass_with_confirmation():
    req = request(options="rw,no_root_squash", export_to="*", confirm_risky=True)
    assert set(req.risks) == {"no_root_squash", "everyone"}
    req = request(options="rw,root_squash,anonuid=0,anongid=0", confirm_risky=True)
    assert req.risks == ("anon_root",)


def test_the_recipes_layout_nfsdata_on_both_sides_is_accepted():
    req = request(export_path="/nfsdata", mount_path="/nfsdata")
    assert req.export_path == req.mount_path == "/nfsdata"
