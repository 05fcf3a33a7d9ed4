"""The evacuation page's websocket: state first, its changes, and the progress of its items'
migrations (those it had on connect and those that start later)."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from core import broadcast
from maintenance.choices import ItemActionChoices as IA, ItemStatusChoices as IS
from maintenance.models import Evacuation, EvacuationItem
from maintenance.routing import websocket_urlpatterns
from migrations_app.models import Migration
from tests.fakes.fleet import make_host, make_vm

app = URLRouter(websocket_urlpatterns)


def communicator(path, user):
    comm = WebsocketCommunicator(app, path)
    comm.scope["user"] = user
    return comm


def _migration(vm, src, dst):
    return Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=src, destination=dst,
                                    options={}, status="migrating")


@pytest.mark.django_db(transaction=True)
def test_evacuation_socket_sends_state_then_changes_and_every_item_migrations_progress(viewer):
    src, dst = make_host("kvm-a"), make_host("kvm-b")
    first, second = make_vm(src, "web-1"), make_vm(src, "web-2")
    ev = Evacuation.objects.create(host=src)
    early = _migration(first, src, dst)
    EvacuationItem.objects.create(evacuation=ev, position=1, vm_uuid=first.uuid, vm_name=first.name, action=IA.LIVE,
                                  origin=src, destination=dst, status=IS.RUNNING, migration=early)
    EvacuationItem.objects.create(evacuation=ev, position=2, vm_uuid=second.uuid, vm_name=second.name,
                                  action=IA.LIVE, origin=src, destination=dst)
    late = _migration(second, src, dst)  # starts after the page connected
    unrelated = _migration(make_vm(dst, "db-1"), dst, src)

    async def scenario():
        comm = communicator(f"/ws/evacuations/{ev.pk}/", viewer)
        connected, _ = await comm.connect()
        assert connected
        state = await comm.receive_json_from()
        await sync_to_async(broadcast.migration_progress)(early.pk, {"t": 1.0, "pct": 40.0})
        early_sample = await comm.receive_json_from(timeout=2)
        await sync_to_async(broadcast.migration_progress)(late.pk, {"t": 1.0, "pct": 10.0})
        await sync_to_async(broadcast.migration_progress)(unrelated.pk, {"t": 1.0, "pct": 99.0})
        assert await comm.receive_nothing(timeout=0.3)  # not followed (yet)
        await sync_to_async(broadcast.evacuation_status)(ev.pk, {"status": "running", "items": [
            {"migration": early.pk}, {"migration": late.pk}]})
        status = await comm.receive_json_from(timeout=2)
        await sync_to_async(broadcast.migration_progress)(late.pk, {"t": 2.0, "pct": 20.0})
        late_sample = await comm.receive_json_from(timeout=2)
        await sync_to_async(broadcast.migration_status)(late.pk, {"id": late.pk, "status": "succeeded"})
        late_status = await comm.receive_json_from(timeout=2)
        await comm.disconnect()
        return state, early_sample, status, late_sample, late_status

    state, early_sample, status, late_sample, late_status = async_to_sync(scenario)()
    assert state["type"] == "evacuation.state" and state["evacuation"]["id"] == ev.pk
    assert [i["vm"] for i in state["evacuation"]["items"]] == ["web-1", "web-2"]
    assert early_sample == {"type": "migration.progress", "migration": early.pk, "sample": {"t": 1.0, "pct": 40.0}}
    assert status == {"type": "evacuation.status", "evacuation": {"status": "running", "items": [
        {"migration": early.pk}, {"migration": late.pk}]}}
    assert late_sample == {"type": "migration.progress", "migration": late.pk, "sample": {"t": 2.0, "pct": 20.0}}
    assert late_status == {"type": "migration.status", "migration": {"id": late.pk, "status": "succeeded"}}


@pytest.mark.django_db(transaction=True)
def test_evacuation_socket_checks_the_user_and_the_evacuation(nobody, viewer):
    async def attempt(path, user):
        comm = communicator(path, user)
        connected, code = await comm.connect()
        await comm.disconnect()
        return connected, code

    assert async_to_sync(attempt)("/ws/evacuations/1/", AnonymousUser()) == (False, 4401)
    assert async_to_sync(attempt)("/ws/evacuations/1/", nobody) == (False, 4403)
    assert async_to_sync(attempt)("/ws/evacuations/999999/", viewer) == (False, 4404)


def test_the_portal_routes_the_evacuation_socket():
    from vmportal.asgi import application  # noqa: F401  (imports every app's routes)
    from vmportal import asgi

    paths = [str(p.pattern) for p in asgi.maintenance_websockets]
    assert paths == ["ws/evacuations/<id:evacuation_id>/"]
