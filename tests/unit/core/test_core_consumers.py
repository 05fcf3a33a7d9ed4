"""Websockets: role checked on connect, current state sent first, broadcasts delivered."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import transaction

from core import broadcast
from core.actors import Actor
from core.audit import audit_record
from core.choices import AuditResultChoices
from core.models import Job
from core.routing import websocket_urlpatterns as core_ws
from hosts.routing import websocket_urlpatterns as hosts_ws

pytestmark = pytest.mark.django_db(transaction=True)

app = URLRouter(core_ws + hosts_ws)


def communicator(path, user):
    comm = WebsocketCommunicator(app, path)
    comm.scope["user"] = user
    return comm


async def _connect_and_receive(path, user):
    comm = communicator(path, user)
    connected, code = await comm.connect()
    first = await comm.receive_json_from() if connected else None
    await comm.disconnect()
    return connected, code, first


def connect(path, user):
    return async_to_sync(_connect_and_receive)(path, user)


@pytest.mark.parametrize("path", ["/ws/inventory/", "/ws/audit/"])
def test_anonymous_is_rejected(path):
    connected, code, _ = connect(path, AnonymousUser())
    assert not connected and code == 4401


@pytest.mark.parametrize("path", ["/ws/inventory/", "/ws/audit/"])
def test_user_without_role_is_rejected(nobody, path):
    connected, code, _ = connect(path, nobody)
    assert not connected and code == 4403


def test_viewer_gets_inventory_state_on_connect(viewer):
    connected, _, first = connect("/ws/inventory/", viewer)
    assert connected and first["type"] == "inventory.state"


def test_job_socket_sends_current_state_then_live_log(viewer):
    job = Job.objects.create(kind="test.job", timeout_s=10, log=[{"t": "x", "level": "info", "msg": "earlier"}])

    async def scenario():
        comm = communicator(f"/ws/jobs/{job.pk}/", viewer)
        connected, _ = await comm.connect()
        assert connected
        state = await comm.receive_json_from()
        await _send_log(job)
        live = await comm.receive_json_from(timeout=2)
        await comm.disconnect()
        return state, live

    from asgiref.sync import sync_to_async

    def send_log_sync(job):
        with transaction.atomic():
            broadcast.job_log(job, {"t": "y", "level": "info", "msg": "later"})

    _send_log = sync_to_async(send_log_sync)
    state, live = async_to_sync(scenario)()
    assert state["type"] == "job.state" and state["log"][0]["msg"] == "earlier"
    assert live == {"type": "job.log", "entry": {"t": "y", "level": "info", "msg": "later"}}


def test_job_socket_for_missing_job_is_closed(viewer):
    connected, code, _ = connect("/ws/jobs/999999/", viewer)
    assert not connected and code == 4404


def test_audit_socket_hears_new_events(viewer):
    async def scenario():
        comm = communicator("/ws/audit/", viewer)
        await comm.connect()
        await comm.receive_json_from()
        await record()
        message = await comm.receive_json_from(timeout=2)
        await comm.disconnect()
        return message

    from asgiref.sync import sync_to_async

    @sync_to_async
    def record():
        with transaction.atomic():
            return audit_record(actor=Actor.system(), action="test.live", result=AuditResultChoices.OK)

    message = async_to_sync(scenario)()
    assert message["type"] == "audit.recorded" and message["event_id"]


def test_rolled_back_change_is_not_broadcast(viewer):
    async def scenario():
        comm = communicator("/ws/inventory/", viewer)
        await comm.connect()
        await comm.receive_json_from()
        await rolled_back()
        nothing = await comm.receive_nothing(timeout=0.3)
        await comm.disconnect()
        return nothing

    from asgiref.sync import sync_to_async

    @sync_to_async
    def rolled_back():
        try:
            with transaction.atomic():
                broadcast.inventory_changed(host_id=1)
                raise RuntimeError("rollback")
        except RuntimeError:
            pass

    assert async_to_sync(scenario)() is True


def _asgi_connect(path, origin: bytes | None):
    from vmportal.asgi import application

    async def scenario():
        headers = [(b"origin", origin)] if origin is not None else []
        comm = WebsocketCommunicator(application, path, headers=headers)
        connected, code = await comm.connect()
        await comm.disconnect()
        return connected, code

    return async_to_sync(scenario)()


@pytest.mark.parametrize("origin", [
    b"http://evil.example",
    b"http://127.0.0.1:9999",  # right host, wrong port
    b"https://127.0.0.1",  # right host, wrong scheme and port
    b"https://127.0.0.1:8000",  # right host and port, wrong scheme
    b"http://127.0.0.1:8000.evil.example",
    b"http://127.0.0.1:99999",
    b"null",
    None,
])
def test_asgi_app_refuses_any_origin_but_the_exact_site_origin(origin):
    connected, _ = _asgi_connect("/ws/inventory/", origin)
    assert connected is False


@pytest.mark.parametrize("origin", [b"http://127.0.0.1:8000", b"http://LOCALHOST:8000", b"http://[::1]:8000"])
def test_asgi_app_lets_the_site_origin_through_to_the_role_check(origin):
    # Past the origin check an anonymous socket reaches the consumer, which closes it with 4401.
    connected, code = _asgi_connect("/ws/inventory/", origin)
    assert connected is False and code == 4401


@pytest.mark.parametrize("path", ["/ws/nowhere/", "/ws/jobs/99999999999999999999/", "/ws/jobs/0/",
                                  "/ws/migrations/9223372036854775808/", "/ws/evacuations/x/"])
def test_unknown_or_out_of_range_websocket_paths_are_closed_cleanly(path, caplog):
    connected, code = _asgi_connect(path, b"http://127.0.0.1:8000")
    assert connected is False and code == 4404
    assert "Traceback" not in caplog.text and "No route found" not in caplog.text


def test_site_origins_follow_the_https_setting_and_configured_list():
    from vmportal.origins import SiteOriginValidator, default_site_origins

    https = default_site_origins(allowed_hosts=["portal.example", "*", ".wild.example"], port=8000, https=True,
                                 trusted=["https://alt.example:8443"])
    assert https == ["https://portal.example:443", "https://alt.example:8443"]
    validator = SiteOriginValidator(None, https)
    assert validator.origin_allowed([(b"origin", b"https://portal.example")])
    assert not validator.origin_allowed([(b"origin", b"http://portal.example")])
    assert not validator.origin_allowed([(b"origin", b"https://alt.example")])
    assert not validator.origin_allowed([(b"origin", b"https://portal.example"), (b"origin", b"https://portal.example")])


def test_an_event_for_a_page_that_just_closed_is_dropped_not_raised():
    from autobahn.exception import Disconnected

    from core.consumers import JobConsumer

    consumer = JobConsumer()
    sent = []

    async def closed(message):
        sent.append(message)
        raise Disconnected("Attempt to send on a closed protocol")

    consumer.base_send = closed
    async_to_sync(consumer.job_status)({"job": {"id": 1}})  # no exception
    assert sent and sent[0]["type"] == "websocket.send"


def test_inventory_event_names_the_host_and_whether_the_set_of_hosts_changed(viewer):
    from tests.fakes.fleet import make_host

    one, two = make_host("kvm-seven"), make_host("kvm-eight")  # hosts the viewer may see

    async def scenario():
        comm = communicator("/ws/inventory/", viewer)
        await comm.connect()
        await comm.receive_json_from()
        await send()
        heard = []
        # Coalesced: one message or two (the first may leave before the second is held), never more.
        while len({h for m in heard for h in m["host_ids"]}) < 2:
            heard.append(await comm.receive_json_from(timeout=2))
        nothing_more = await comm.receive_nothing(timeout=0.4)
        await comm.disconnect()
        return heard, nothing_more

    from asgiref.sync import sync_to_async

    @sync_to_async
    def send():
        with transaction.atomic():
            broadcast.inventory_changed(host_id=one.pk)
            broadcast.inventory_changed(host_id=two.pk, hosts_changed=True)

    heard, nothing_more = async_to_sync(scenario)()
    assert nothing_more and len(heard) <= 2
    assert all(m["type"] == "inventory.changed" and not m["everything"] for m in heard)
    assert heard[-1]["hosts_changed"] is True and two.pk in heard[-1]["host_ids"]
    assert sorted(h for m in heard for h in m["host_ids"]) == sorted([one.pk, two.pk])
    if len(heard) == 2:
        assert heard[0] == {"type": "inventory.changed", "host_ids": [one.pk], "hosts_changed": False,
                            "everything": False, "hosts": {}, "guests": {}}


def test_a_burst_of_vm_state_events_reaches_a_socket_as_few_messages_with_every_change(viewer):
    """vm.state for 50 guests in a burst: the socket hears each guest's last state, in far fewer messages."""
    from hosts.models import VirtualMachine
    from tests.fakes.fleet import make_host

    host = make_host("kvm-burst")
    vms = [VirtualMachine.objects.create(host=host, uuid=f"00000000-0000-0000-0000-{n:012d}", name=f"g{n}",
                                         state="shutoff") for n in range(50)]

    @sync_to_async
    def burst():
        for vm in vms:  # one transaction each, as 50 separate changes would be
            vm.state = "running"
            with transaction.atomic():
                broadcast.vm_state(vm)

    async def scenario():
        comm = communicator("/ws/inventory/", viewer)
        await comm.connect()
        await comm.receive_json_from()
        await burst()
        heard, guests = [], {}
        while len(guests) < len(vms):
            message = await comm.receive_json_from(timeout=2)
            heard.append(message)
            guests.update(message["guests"])
        nothing_more = await comm.receive_nothing(timeout=0.4)
        await comm.disconnect()
        return heard, guests, nothing_more

    heard, guests, nothing_more = async_to_sync(scenario)()
    assert nothing_more
    assert len(heard) < 10, [len(m["guests"]) for m in heard]
    assert guests == {str(vm.pk): {"host_id": host.pk, "state": "running", "label": "Running"} for vm in vms}
    assert all(m["host_ids"] == [host.pk] for m in heard)
