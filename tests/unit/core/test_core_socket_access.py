"""An open websocket closes when its session or its user's role is gone: at once on logout,
deactivation, a group change or a password change, and on the periodic re-check otherwise."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import Client

from core.routing import websocket_urlpatterns as core_ws
from hosts.routing import websocket_urlpatterns as hosts_ws
from maintenance.routing import websocket_urlpatterns as maintenance_ws
from migrations_app.routing import websocket_urlpatterns as migrations_ws

pytestmark = pytest.mark.django_db(transaction=True)

app = URLRouter(core_ws + hosts_ws + migrations_ws + maintenance_ws)


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


async def open_socket(path, user, client):
    comm = WebsocketCommunicator(app, path)
    comm.scope["user"] = user
    comm.scope["session"] = SessionStore(client.session.session_key)
    connected, _ = await comm.connect()
    assert connected
    await comm.receive_json_from()  # the current state
    return comm


def run_scenario(path, user, change, *, recheck=60.0, settings=None):
    """Open a socket for the user, make the change, and return the close code (None: stays open)."""
    if settings is not None:
        settings.VMPORTAL_WS_RECHECK_SECONDS = recheck
    client = logged_in(user)

    async def scenario():
        comm = await open_socket(path, user, client)
        await sync_to_async(change)(client)
        # The change may itself be audited (a logout, a group change): the audit socket hears of
        # it before it closes. Only a close, or quiet, answers the question.
        while True:
            if await comm.receive_nothing(timeout=0.5):
                await comm.disconnect()
                return None
            message = await comm.receive_output(timeout=2)
            if message["type"] == "websocket.close":
                return message.get("code")
            assert message["type"] == "websocket.send", message

    return async_to_sync(scenario)()


def test_logout_closes_the_sessions_sockets_at_once(viewer):
    assert run_scenario("/ws/audit/", viewer, lambda client: client.post("/logout/")) == 4401


def test_logout_of_another_session_leaves_this_one_open(viewer):
    other = logged_in(viewer)
    assert run_scenario("/ws/audit/", viewer, lambda client: other.post("/logout/")) is None


def test_losing_the_role_closes_the_socket_at_once(viewer):
    def demote(client):
        viewer.groups.remove(Group.objects.get(name="Viewer"))

    assert run_scenario("/ws/inventory/", viewer, demote) == 4403


def test_removing_the_user_from_the_group_side_closes_the_socket(viewer):
    def demote(client):
        Group.objects.get(name="Viewer").user_set.clear()

    assert run_scenario("/ws/audit/", viewer, demote) == 4403


def test_deleting_the_role_group_closes_its_members_sockets(viewer):
    assert run_scenario("/ws/audit/", viewer, lambda client: Group.objects.filter(name="Viewer").delete()) == 4403


def test_deactivation_closes_the_socket_at_once(viewer):
    def deactivate(client):
        viewer.is_active = False
        viewer.save()

    assert run_scenario("/ws/audit/", viewer, deactivate) == 4401


def test_password_change_closes_the_old_sessions_sockets(viewer):
    def change_password(client):
        viewer.set_password("another long passphrase")
        viewer.save()

    assert run_scenario("/ws/audit/", viewer, change_password) == 4401


def test_a_change_the_role_survives_leaves_the_socket_open(operator):
    def rename(client):
        operator.first_name = "Otto"
        operator.save()

    assert run_scenario("/ws/audit/", operator, rename) is None


def test_the_periodic_recheck_closes_a_socket_whose_session_vanished_without_a_signal(viewer, settings):
    # Sessions expire or are purged (clearsessions) without any signal: only the re-check sees it.
    def purge(client):
        Session.objects.filter(session_key=client.session.session_key).delete()

    assert run_scenario("/ws/audit/", viewer, purge, recheck=0.1, settings=settings) == 4401


def test_the_periodic_recheck_keeps_a_valid_socket_open(viewer, settings):
    assert run_scenario("/ws/audit/", viewer, lambda client: None, recheck=0.1, settings=settings) is None


def _job(host):
    from core.models import Job

    return f"/ws/jobs/{Job.objects.create(kind='test.job', timeout_s=10).pk}/"


def _migration(host):
    from migrations_app.models import Migration

    vm = host.vms.first()
    row = Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=host, destination=host, options={})
    return f"/ws/migrations/{row.pk}/"


def _evacuation(host):
    from maintenance.models import Evacuation

    return f"/ws/evacuations/{Evacuation.objects.create(host=host).pk}/"


@pytest.mark.parametrize("path_for", [_job, _migration, _evacuation], ids=["job", "migration", "evacuation"])
def test_every_kind_of_socket_closes_on_logout(viewer, path_for, trusted_host):
    path = path_for(trusted_host)
    assert run_scenario(path, viewer, lambda client: client.post("/logout/")) == 4401
