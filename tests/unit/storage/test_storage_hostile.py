"""Hostile input through the form, the service and the CLI: refused, and nothing runs on a host.

The fake hosts record every command they are asked to run; after each refused request they
have recorded none, no share or job exists, and no file or directory appeared on them.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from core.actors import Actor
from core.models import AuditEvent, Job
from hosts.models import Host
from storage import services
from storage.models import Share

pytestmark = pytest.mark.django_db

HOSTILE_PATHS = [
    "relative/dir", "srv", "/srv/../etc", "/srv/vm/../../etc", "/srv/with space", "/srv/it's", '/srv/"quoted"',
    "/srv/a;touch /tmp/pwned", "/srv/$(touch /tmp/pwned)", "/srv/${IFS}x", "/srv/`touch /tmp/pwned`",
    "/srv/a\ntouch /tmp/pwned", "/srv/a\rb", "/srv/a\x00b", "/srv/a|b", "/srv/a&&b", "/srv/a>b", "/srv/*", "/srv/a#b",
    "/", "//", "/etc", "/etc/ganesha", "/usr", "/usr/share/x", "/proc", "/proc/self", "/sys/kernel", "/dev", "/dev/shm/x",
    "/boot", "/bin", "/sbin/x", "/lib", "/lib64", "/lib/modules", "/run/x", "/tmp/x", "/srv", "/mnt", "-rf", "--help",
    "/srv/x y", "/srv/\u202ex", "/srv/" + "a" * 300, "/root", "/root/.ssh", "/home/alice", "/srv/alice/.ssh",
]
HOSTILE_FIELDS = (
    [("export_path", p) for p in HOSTILE_PATHS]
    + [("mount_path", p) for p in HOSTILE_PATHS]
    + [("options", o) for o in (
        "rw,sync;touch /tmp/pwned", "rw,$(reboot)", "rw,`id`", "rw\nsync", "rw,fsid=0", "rw) *(rw,no_root_squash", "rw,anonuid=0;x",
        "", "rw,ro", "no_root_squash",  # risky without the confirmation
        "rw,root_squash,anonuid=0", "rw,anongid=0", "rw,all_squash,anonuid=0,anongid=0",  # as risky as no_root_squash
        "rw,anonuid=9999999999", "rw,anongid=4294967295",  # not ids
    )]
    + [("export_to", e) for e in (
        "evil.example.com", "10.0.0.0/24;touch /tmp/pwned", "0.0.0.0/0", "*", "h1(rw,no_root_squash)", "$(id)", "h1\nh2",
        "192.0.2.0/24",  # a network with no host of the inventory
    )]
    + [("nfs_version", v) for v in ("5", "4;reboot", "")]
    + [("server_impl", v) for v in ("samba", "kernel;id")]
)
CLIENTS_CASES = [["h3"], ["h1", "h3"], ["nosuch"], ["h1;id"], [], ["h1", "h1"]]


def base() -> dict:
    return dict(server="h3", clients=["h1", "h2"], export_path="/srv/vmstore", mount_path="/mnt/vmstore", export_to="",
                options="rw,sync,root_squash", nfs_version="4.1", server_impl="")


def assert_nothing_ran(world, snapshot):
    assert world.all_commands() == []
    assert {n: h.snapshot() for n, h in world.hosts.items()} == snapshot
    assert not Share.objects.exists() and not Job.objects.filter(kind__startswith="share.").exists()


@pytest.fixture
def untouched(nfs_fleet):
    return {n: h.snapshot() for n, h in nfs_fleet.hosts.items()}


@pytest.mark.parametrize("field,value", HOSTILE_FIELDS, ids=[f"{f}={v!r}"[:50] for f, v in HOSTILE_FIELDS])
def test_service_refuses_before_any_command(field, value, nfs_fleet, untouched):
    with pytest.raises(ValidationError) as caught:
        services.share_create(**{**base(), field: value}, actor=Actor.system())
    assert caught.value.message_dict  # says which field, and why
    assert_nothing_ran(nfs_fleet, untouched)
    assert AuditEvent.objects.filter(action="share.create", result="refused").count() == 1


@pytest.mark.parametrize("clients", CLIENTS_CASES)
def test_service_refuses_bad_clients(clients, nfs_fleet, untouched):
    with pytest.raises(ValidationError) as caught:
        services.share_create(**{**base(), "clients": clients}, actor=Actor.system())
    assert "clients" in caught.value.message_dict
    assert_nothing_ran(nfs_fleet, untouched)


@pytest.mark.parametrize("field,value", HOSTILE_FIELDS, ids=[f"{f}={v!r}"[:50] for f, v in HOSTILE_FIELDS])
def test_form_refuses_and_shows_the_value_escaped(field, value, admin_client, nfs_fleet, untouched, django_capture_on_commit_callbacks):
    ids = {h.name: h.pk for h in Host.objects.all()}
    data = {**base(), "server": ids["h3"], "clients": [ids["h1"], ids["h2"]], field: value}
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("storage:share_create"), data)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Please correct the fields marked below." in page
    assert "<b>" not in page.split("<main")[1] or "&lt;" in page
    assert_nothing_ran(nfs_fleet, untouched)


def test_form_refuses_a_server_that_is_also_a_client(admin_client, nfs_fleet, untouched, django_capture_on_commit_callbacks):
    ids = {h.name: h.pk for h in Host.objects.all()}
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("storage:share_create"), {**base(), "server": ids["h3"], "clients": [ids["h1"], ids["h3"]]})
    assert "is the server; it serves the export and cannot also be one of its clients" in response.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("storage:share_create"), {**base(), "server": "1; reboot", "clients": ["x"]})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert_nothing_ran(nfs_fleet, untouched)


def cli_args(**overrides) -> list[str]:
    values = {"server": "h3", "export": "/srv/vmstore", "clients": "h1,h2", "mount": "/mnt/vmstore", **overrides}
    return [f"--{k.replace('_', '-')}={v}" for k, v in values.items()]


CLI_CASES = (
    [{"export": p} for p in HOSTILE_PATHS if not p.startswith("-")]
    + [{"mount": p} for p in HOSTILE_PATHS[:20]]
    + [{"export": "/root/.ssh"}, {"export": "/home/alice"}, {"mount": "/root/.ssh"}, {"mount": "/home/alice/.config"}]
    + [{"options": "rw;reboot"}, {"options": "rw,no_root_squash"}, {"options": "rw,anonuid=0"}, {"options": "rw,anongid=0"},
       {"options": "rw,anonuid=9999999999"}, {"export_to": "*"}, {"export_to": "evil.example.com"},
       {"clients": "h1,h3"}, {"clients": "nosuch"}, {"server": "nosuch"}, {"nfs_version": "9"}]
)


@pytest.mark.parametrize("overrides", CLI_CASES, ids=[repr(c)[:50] for c in CLI_CASES])
def test_cli_refuses_with_status_2_before_any_command(overrides, nfs_fleet, untouched):
    with pytest.raises(CommandError) as caught:
        call_command("nfs_setup", *cli_args(**overrides), "--yes")
    assert caught.value.returncode == 2 and "Nothing was run" in str(caught.value)
    assert_nothing_ran(nfs_fleet, untouched)


@pytest.mark.parametrize("field,value", [
    ("clients", ["99999999999999999999"]), ("clients", ["9223372036854775808"]), ("clients", ["0"]),
    ("server", "99999999999999999999"), ("server", "-1"),
])
def test_form_refuses_an_out_of_range_host_id_as_a_form_error(field, value, admin_client, nfs_fleet, untouched,
                                                              django_capture_on_commit_callbacks):
    ids = {h.name: h.pk for h in Host.objects.all()}
    data = {**base(), "server": ids["h3"], "clients": [ids["h1"]], field: value}
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("storage:share_create"), data)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Please correct the fields marked below." in page
    assert "Select a valid choice" in page or "is not a valid value" in page
    assert_nothing_ran(nfs_fleet, untouched)
