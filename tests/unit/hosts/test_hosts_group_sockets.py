"""Websockets and host groups: a socket following a job, migration or evacuation of a host outside
the user's groups is refused (4403); the inventory socket passes on only events of the user's
hosts; losing the grant closes a record's socket at once."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.db import transaction

from core import broadcast
from core.actors import Actor
from core.models import Job
from core.routing import websocket_urlpatterns as core_ws
from hosts.models import HostGroup, HostGroupGrant, VirtualMachine
from hosts.routing import websocket_urlpatterns as hosts_ws
from maintenance.routing import websocket_urlpatterns as maintenance_ws
from migrations_app.routing import websocket_urlpatterns as migrations_ws

pytestmark = pytest.mark.django_db(transaction=True)

app = URLRouter(core_ws + hosts_ws + migrations_ws + maintenance_ws)


@pytest.fixture
def teams(fleet):
    rows = {}
    for name in ("kvm-a", "kvm-b"):
        fleet.add(name)
        host = fleet.host_row(name)
        HostGroup.objects.create(name=f"team-{name[-1]}").hosts.add(host)
        VirtualMachine.objects.create(host=host, uuid=uuid.uuid4(), name=f"vm-{name}", state="running")
        rows[name] = host
    user = get_user_model().objects.create_user("ann", password="x-long-pass-9")
    HostGroupGrant.objects.create(group=HostGroup.objects.get(name="team-a"), user=user, role="Operator")
    rows["user"] = user
    return rows


def _job(host):
    return f"/ws/jobs/{Job.objects.create(kind='t', timeout_s=10, target_type='host', target_id=str(host.pk)).pk}/"


def _migration(host):
    from migrations_app.models import Migration

    vm = host.vms.first()
    row = Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=host, destination=host, options={})
    return f"/ws/migrations/{row.pk}/"


def _evacuation(host):
    from maintenance.models import Evacuation

    return f"/ws/evacuations/{Evacuation.objects.create(host=host).pk}/"


def _connect(path, user):
    async def scenario():
        comm = WebsocketCommunicator(app, path)
        comm.scope["user"] = user
        connected, code = await comm.connect()
        await comm.disconnect()
        return connected, code

    return async_to_sync(scenario)()


@pytest.mark.parametrize("path_for", [_job, _migration, _evacuation], ids=["job", "migration", "evacuation"])
def test_a_record_socket_is_refused_outside_the_users_groups(teams, path_for):
    assert _connect(path_for(teams["kvm-a"]), teams["user"]) == (True, None)
    connected, code = _connect(path_for(teams["kvm-b"]), teams["user"])
    assert not connected and code == 4403


def test_inventory_events_of_hosts_outside_the_users_groups_are_not_delivered(teams):
    def send(host_id):
        with transaction.atomic():
            broadcast.inventory_changed(host_id=host_id)

    async def scenario():
        comm = WebsocketCommunicator(app, "/ws/inventory/")
        comm.scope["user"] = teams["user"]
        connected, _ = await comm.connect()
        assert connected
        state = await comm.receive_json_from()
        await sync_to_async(send)(teams["kvm-b"].pk)
        await sync_to_async(send)(teams["kvm-a"].pk)
        heard = await comm.receive_json_from(timeout=2)  # kvm-b's event, had it come, would be first
        nothing_more = await comm.receive_nothing(timeout=0.2)
        await comm.disconnect()
        return state, heard, nothing_more

    state, heard, nothing_more = async_to_sync(scenario)()
    assert state["hosts"] == 1
    assert heard == {"type": "inventory.changed", "host_ids": [teams["kvm-a"].pk], "hosts_changed": False,
                     "everything": False, "hosts": {}, "guests": {}}
    assert nothing_more


def test_losing_the_hosts_group_closes_a_record_socket_at_once(teams):
    """The user keeps a role (on team-b), but no longer on the migration's host."""
    from django.contrib.sessions.backends.db import SessionStore
    from django.test import Client

    from hosts.group_services import host_group_grant

    path = _migration(teams["kvm-a"])
    client = Client()
    client.force_login(teams["user"])

    def regroup():
        groups = {g.name: g for g in HostGroup.objects.all()}
        host_group_grant(group=groups["team-b"], user=teams["user"], role="Viewer", actor=Actor.system())
        host_group_grant(group=groups["team-a"], user=teams["user"], role=None, actor=Actor.system())

    async def scenario():
        comm = WebsocketCommunicator(app, path)
        comm.scope["user"] = teams["user"]
        comm.scope["session"] = SessionStore(client.session.session_key)
        connected, _ = await comm.connect()
        assert connected
        await comm.receive_json_from()
        await sync_to_async(regroup)()
        closed = await comm.receive_output(timeout=2)
        await comm.disconnect()
        return closed

    assert async_to_sync(scenario)() == {"type": "websocket.close", "code": 4403}
