"""The object-level RBAC matrix: every mutating view (from the URL conf, so a new one is covered)
× role × the user's grant being on the host's group or on another group.

A user here has no global role, only a grant on group "team-a" (host kvm-a); kvm-b is in
"team-b". A POST on kvm-b (the URL's host, a record of kvm-b, or a form naming kvm-b) must be
403 (and audited), a POST on kvm-a is 403 exactly when the granted role is below what the view
needs.
"""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from core.choices import ROLE_ORDER, RoleChoices
from core.models import AuditEvent
from hosts.models import HostChange, HostGroup, HostGroupGrant, VirtualMachine
from hosts.permissions import HostAccessMixin, records_for, role_rank_on

pytestmark = pytest.mark.django_db

# Mutating views that act on no host (each checks the global role only). A new mutating view
# must either use HostAccessMixin or be listed here, with the reason.
NOT_HOST_SCOPED = {
    "core:person", "core:person_add", "core:invitation_accept",  # people, not hosts
    "core:audit_chain",  # the audit trail (its checkpoints)
    "core:logout", "core:login",
    "hosts:portal_key", "hosts:host_add", "hosts:host_groups",  # no one host; Admin only
    "calendar_app:zone", "calendar_app:feed_tokens",  # the user's own settings
    "fleet:settings",  # the portal's balancing settings; Admin only
}
# How many mutating views the matrix covers: a view added or lost changes it (no vacuous pass).
HOST_SCOPED_VIEW_COUNT = 41


def _walk(resolver, prefix=""):
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry, f"{prefix}{entry.namespace}:" if entry.namespace else prefix)
        elif isinstance(entry, URLPattern) and entry.name:
            yield f"{prefix}{entry.name}", entry


def mutating_views():
    for name, pattern in _walk(get_resolver()):
        view = getattr(pattern.callback, "view_class", None)
        if view is not None and hasattr(view, "post"):
            yield name, pattern, view


def host_scoped_views():
    return [(n, p, v) for n, p, v in mutating_views() if issubclass(v, HostAccessMixin)]


@pytest.mark.parametrize("global_rank, grants, groups, expected", [
    (-1, {}, [1], -1),
    (-1, {1: 1}, [1], 1),
    (-1, {1: 1}, [2], -1),
    (0, {1: 2}, [1, 3], 2),
    (2, {}, [], 2),
    (0, {1: 1, 2: 2}, [1, 2], 2),
])
def test_role_rank_on_table(global_rank, grants, groups, expected):
    assert role_rank_on(global_rank=global_rank, grants=grants, host_groups=groups) == expected


def test_every_mutating_view_is_host_scoped_or_listed():
    unscoped = {name for name, _p, view in mutating_views() if not issubclass(view, HostAccessMixin)}
    assert unscoped - NOT_HOST_SCOPED == set(), "scope these with HostAccessMixin or list them with a reason"
    assert NOT_HOST_SCOPED <= unscoped, "a view listed as not host-scoped is scoped now: take it off the list"
    assert len(host_scoped_views()) == HOST_SCOPED_VIEW_COUNT


@pytest.fixture
def two_teams(fleet):
    fleet.add("kvm-a")
    fleet.add("kvm-b")
    rows = {name: fleet.host_row(name) for name in ("kvm-a", "kvm-b")}
    for name, host in rows.items():
        group = HostGroup.objects.create(name=f"team-{name[-1]}")
        group.hosts.add(host)
        VirtualMachine.objects.create(host=host, uuid=uuid.uuid4(), name=f"vm-{name}", state="running")
        HostChange.objects.create(host=host, proposed={}, requested_by_label="x")
    return rows


def _saved_state_on(host) -> int:
    from guest_state.models import SavedState

    vm = host.vms.first()
    return SavedState.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=host, path="/srv/s.state").pk


def _snapshot_on(host) -> int:
    from guest_state.models import GuestSnapshot

    vm = host.vms.first()
    return GuestSnapshot.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=host,
                                        name=f"s{GuestSnapshot.objects.count()}",
                                        status="present").pk


def _plan_on(host) -> int:
    from migrations_app.models import MigrationPlan, PreflightRun

    vm = host.vms.first()
    plan = MigrationPlan.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=host, options={})
    PreflightRun.objects.create(plan=plan, destination=host)
    return plan.pk


def _migration_on(host) -> int:
    from migrations_app.models import Migration

    vm = host.vms.first()
    return Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=host, destination=host,
                                    options={}).pk


def _evacuation_on(host) -> int:
    from maintenance.models import Evacuation

    return Evacuation.objects.create(host=host).pk


def _share_on(host) -> int:
    from storage.models import Share

    share = Share.objects.create(server=host, export_path=f"/srv/vmstore{Share.objects.count()}",
                                 mount_path="/mnt/vmstore")
    share.clients.add(host)
    share.setups.create(stamp="s", token="t")
    return share.pk


def _window_on(host) -> int:
    from datetime import timedelta

    from django.utils import timezone

    from calendar_app.models import MaintenanceWindow

    start = timezone.now() + timedelta(days=3)
    window = MaintenanceWindow.objects.create(title="w", start=start, end=start + timedelta(hours=2))
    window.hosts.add(host)
    return window.pk


def _recovery_item_on(host) -> int:
    from recovery.models import HostRecovery, RecoveryItem

    vm = host.vms.first()
    recovery = HostRecovery.objects.create(host=host, fencing_statement="off")
    return RecoveryItem.objects.create(recovery=recovery, vm_uuid=vm.uuid, vm_name=vm.name, destination=host,
                                       definition_encrypted="x").pk


# Views whose ``pk`` names a record of the host, not the host: how to make one for the matrix.
RECORD_PK = {
    "guest_state:restore": _saved_state_on, "guest_state:delete": _saved_state_on,
    "guest_state:snapshot_revert": _snapshot_on, "guest_state:snapshot_delete": _snapshot_on,
    "recovery:stale_remove": _recovery_item_on,
    "migrations_app:plan_destination": _plan_on, "migrations_app:plan_grid": _plan_on,
    "migrations_app:plan_repair_permissions": _plan_on,
    "migrations_app:migration_action": _migration_on,
    "maintenance:evacuation_action": _evacuation_on,
    "storage:setup_apply": _share_on, "storage:share_plan": _share_on, "storage:share_verify": _share_on,
    "calendar_app:window_move": _window_on, "calendar_app:window_cancel": _window_on,
}
# Views that take their hosts from the form, not the URL: the POST naming the host.
FORM_HOSTS = {
    "storage:share_create": lambda host: {"server": host.pk, "clients": [host.pk]},
    "calendar_app:window_create": lambda host: {"hosts": [host.pk]},
    "fleet:apply": lambda host: {"rec_id": f"rec-{host.name}"},
    "fleet:dismiss": lambda host: {"rec_id": f"rec-{host.name}", "reason": "being rebuilt", "hours": 1},
}


@pytest.fixture
def fleet_recommends_moves_on(monkeypatch):
    """fleet:apply and fleet:dismiss: the recommendation ``rec-<host>`` moves that host's guest onto the host itself."""
    from fleet import recommend, services

    def find(*, rec_id, basis="assigned", metric=None, hosts=None):
        name = rec_id.removeprefix("rec-")
        vm = VirtualMachine.objects.filter(host__name=name).first()
        if vm is None:
            return None
        move = recommend.Move(uuid=str(vm.uuid), vm=vm.name, source=name, destination=name, memory_kib=1, why="")
        return recommend.Recommendation(id=rec_id, kind=recommend.KIND_BALANCE, moves=(move,), summary="",
                                        reasons=(), before={}, after={})

    monkeypatch.setattr(services, "recommendation_find", find)


def _kwargs(name, pattern, host):
    vm = host.vms.first()
    pk = RECORD_PK[name](host) if name in RECORD_PK else host.pk
    values = {"pk": pk, "host_pk": host.pk, "host_id": host.pk, "vm_uuid": vm.uuid, "vm_pk": vm.pk,
              "action": "start", "change_pk": host.changes.first().pk}
    if "setup_pk" in pattern.pattern.converters:
        from storage.models import Share

        values["setup_pk"] = Share.objects.get(pk=pk).setups.first().pk
    return {key: values[key] for key in pattern.pattern.converters}


def _required_rank(view) -> int:
    on_host = view.host_post_role or view.host_role
    return max(ROLE_ORDER.index(view.required_role), ROLE_ORDER.index(on_host))


@pytest.mark.parametrize("role", list(RoleChoices))
@pytest.mark.parametrize("in_group", [True, False])
def test_rbac_matrix(two_teams, fleet_recommends_moves_on, role, in_group):
    from django.urls import reverse

    user = get_user_model().objects.create_user("granted", password="x-long-pass-9")
    HostGroupGrant.objects.create(group=HostGroup.objects.get(name="team-a"), user=user, role=role)
    client = Client()
    client.force_login(user)
    host = two_teams["kvm-a" if in_group else "kvm-b"]
    views = host_scoped_views()
    assert len(views) == HOST_SCOPED_VIEW_COUNT
    assert set(RECORD_PK) | set(FORM_HOSTS) <= {name for name, _p, _v in views}
    wrong = []
    for name, pattern, view in views:
        refused_before = AuditEvent.objects.filter(action="request.refused").count()
        data = FORM_HOSTS[name](host) if name in FORM_HOSTS else {}
        response = client.post(reverse(name, kwargs=_kwargs(name, pattern, host)), data)
        allowed = in_group and ROLE_ORDER.index(role) >= _required_rank(view)
        if (response.status_code == 403) == allowed:
            wrong.append(f"{name}: {response.status_code} for {role} {'in' if in_group else 'out of'} group")
        if response.status_code == 403 and AuditEvent.objects.filter(action="request.refused").count() == refused_before:
            wrong.append(f"{name}: refused without an audit entry")
    assert wrong == []


def test_inventory_lists_only_hosts_of_the_users_groups(two_teams):
    from django.urls import reverse

    user = get_user_model().objects.create_user("granted", password="x-long-pass-9")
    HostGroupGrant.objects.create(group=HostGroup.objects.get(name="team-a"), user=user, role="Operator")
    client = Client()
    client.force_login(user)
    page = client.get(reverse("hosts:inventory_tables")).content.decode()
    assert "kvm-a" in page and "kvm-b" not in page
    assert client.get(reverse("hosts:host_detail", kwargs={"pk": two_teams["kvm-b"].pk})).status_code == 403


def test_host_group_command_makes_the_group_and_grants_audited(two_teams):
    from django.core.management import call_command

    get_user_model().objects.create_user("oli", password="x-long-pass-9")
    call_command("host_group", "web", "--hosts", "kvm-a,kvm-b", "--grant", "oli:Operator")
    group = HostGroup.objects.get(name="web")
    assert set(group.hosts.values_list("name", flat=True)) == {"kvm-a", "kvm-b"}
    assert HostGroupGrant.objects.get(group=group).role == "Operator"
    assert AuditEvent.objects.filter(action="host_group.grant", actor_label__startswith="cli:").exists()


def test_host_groups_page_creates_a_group_and_grants_a_role(two_teams, admin_client):
    from django.urls import reverse

    oli = get_user_model().objects.create_user("oli", password="x-long-pass-9")
    url = reverse("hosts:host_groups")
    admin_client.post(url, {"form": "group", "name": "db", "hosts": [two_teams["kvm-b"].pk]})
    group = HostGroup.objects.get(name="db")
    admin_client.post(url, {"form": "grant", "group": group.pk, "user": oli.pk, "role": "Operator"})
    assert HostGroupGrant.objects.get(group=group, user=oli).role == "Operator"
    assert admin_client.post(url, {"form": "grant", "group": "9" * 30, "user": oli.pk}).status_code == 200
    page = admin_client.get(url).content.decode()
    assert "oli (Operator)" in page and "kvm-b" in page


def test_commands_act_within_a_users_rights_with_as(two_teams):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    user = get_user_model().objects.create_user("ann", password="x-long-pass-9")
    HostGroupGrant.objects.create(group=HostGroup.objects.get(name="team-a"), user=user, role="Admin")
    VirtualMachine.objects.all().delete()
    with pytest.raises(CommandError, match="does not hold the Admin role on kvm-b"):
        call_command("host_decommission", "kvm-b", "--as", "ann")
    assert AuditEvent.objects.filter(action="command.refused", actor_label="ann").exists()
    call_command("host_decommission", "kvm-a", "--as", "ann")
    assert AuditEvent.objects.get(action="host.decommission").actor_label == "ann"
    call_command("host_decommission", "kvm-b")  # the OS user: full rights
    assert AuditEvent.objects.filter(action="host.decommission", actor_label__startswith="cli:").exists()
