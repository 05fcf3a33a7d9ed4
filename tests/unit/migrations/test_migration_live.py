"""The migration page's websocket, progress payloads, the chart's samples, virsh equivalent, heartbeat probe."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from core import broadcast
from migrations_app import heartbeat, payloads, progress
from migrations_app.models import Migration, MigrationSample
from migrations_app.options import MigrationOptions
from migrations_app.routing import websocket_urlpatterns
from migrations_app.virsh import virsh_migrate_command
from tests.fakes.fleet import MIB, make_host, make_vm

app = URLRouter(websocket_urlpatterns)

STATS = {
    "type": 2, "time_elapsed": 3000, "data_total": 100 * MIB, "data_remaining": 25 * MIB,
    "memory_total": 64 * MIB, "memory_remaining": 16 * MIB, "memory_processed": 90 * MIB,
    "memory_iteration": 2, "memory_bps": 30 * MIB, "memory_dirty_rate": 256, "memory_page_size": 4096,
    "errmsg": "ignored", "not_a_stat": 1, "flag": True,
}


def test_sample_payload():
    payload = payloads.sample_payload(2500, STATS, warning="slow")
    assert payload["t"] == 2.5
    assert payload["pct"] == 75.0  # (total - remaining) / total of memory
    assert payload["iteration"] == 2 and payload["data_remaining"] == 25 * MIB
    assert payload["bps"] == 30 * MIB and payload["dirty_bps"] == MIB
    assert payload["eta_s"] == pytest.approx(25 / 29, abs=0.1)
    assert payload["warning"] == "slow"
    assert progress.compact_stats(STATS) == {k: v for k, v in STATS.items() if k in progress.KEPT_STATS}
    line = progress.progress_line(payload)
    assert "pass 2" in line and "75.0%" in line and "left 25.0 MiB" in line and "at 30.0 MiB/s" in line
    assert payload["forecast"] is None and payload["step"] is None


@pytest.mark.parametrize(("step", "label"), [(1, "downtime raised"), (2, "post-copy"), (3, None), ("1", None)])
def test_a_sample_names_the_adaptive_step_taken_there_and_says_the_forecast(step, label):
    payload = payloads.sample_payload(2500, {**STATS, payloads.ADAPTIVE_STEP_KEY: step},
                                      forecast="Expected to finish in ~3 s.")
    assert payload["step"] == label and payload["forecast"] == "Expected to finish in ~3 s."
    line = progress.progress_line(payload)
    assert line.endswith("— Expected to finish in ~3 s.")
    assert ("[adaptive: " in line) == (label is not None)


def test_chart_samples_are_thinned_evenly_keeping_the_last():
    rows = [(i * 250, {**STATS, "time_elapsed": i}) for i in range(5000)]
    samples = payloads.chart_samples(rows, max_points=100)
    assert len(samples) == 100 and samples[0]["t"] == 0 and samples[-1]["t"] == 4999 * 0.25


@pytest.mark.parametrize(
    "options, expected",
    [
        (MigrationOptions(), "virsh -c qemu+ssh://root@a/system migrate --live --p2p --persistent --undefinesource --verbose 'web 1' qemu+tcp://b/system"),
        (MigrationOptions(live=False, peer_to_peer=False, undefine_source=False), "virsh -c qemu+ssh://root@a/system migrate --offline --persistent --verbose 'web 1' qemu+tcp://b/system"),
        (MigrationOptions(tunnelled=True, copy_storage=True, auto_converge=True, allow_postcopy=True, compressed=True,
                          bandwidth_mibps=100, completion_timeout_s=60, timeout_action="force-complete"),
         "--tunnelled --persistent --undefinesource --copy-storage-all --auto-converge --postcopy --compressed --bandwidth 100 --timeout 60 --timeout-postcopy"),
    ],
)
def test_virsh_equivalent(options, expected):
    command = virsh_migrate_command(options, guest="web 1", source_uri="qemu+ssh://root@a/system", dest_uri="qemu+tcp://b/system")
    assert expected in command


def test_heartbeat_probe(settings, monkeypatch):
    heartbeat._load.cache_clear()
    settings.VMPORTAL_GUEST_HEARTBEAT_PROBE = ""
    assert heartbeat.probe_guest("g", 0) is None
    answers = {"g": {"max_gap_s": "0.5", "continuous": 1, "beats": 12}, "bad": {"max_gap_s": "soon"},
               "neg": {"max_gap_s": -1, "continuous": True, "beats": 1}}

    def probe(name, since):
        if name == "boom":
            raise OSError("no log")
        return answers.get(name)

    monkeypatch.setattr(heartbeat, "import_string", lambda path: probe)
    settings.VMPORTAL_GUEST_HEARTBEAT_PROBE = "lab.heartbeat:probe"
    try:
        assert heartbeat.probe_guest("g", 0) == heartbeat.GuestHeartbeat(max_gap_s=0.5, continuous=True, beats=12)
        assert heartbeat.probe_guest("unknown", 0) is None
        assert heartbeat.probe_guest("bad", 0) is None
        assert heartbeat.probe_guest("neg", 0) is None
        assert heartbeat.probe_guest("boom", 0) is None  # a broken probe never fails a migration
    finally:
        heartbeat._load.cache_clear()


def test_heartbeat_probe_path_forms():
    heartbeat._load.cache_clear()
    from lab.heartbeat import probe

    assert heartbeat._load("lab.heartbeat:probe") is probe
    assert heartbeat._load("lab.heartbeat.probe") is probe
    heartbeat._load.cache_clear()


def communicator(path, user):
    comm = WebsocketCommunicator(app, path)
    comm.scope["user"] = user
    return comm


@pytest.mark.django_db(transaction=True)
def test_migration_socket_sends_state_with_samples_then_live_progress(viewer):
    src, dst = make_host("kvm-a"), make_host("kvm-b")
    vm = make_vm(src)
    migration = Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=src, destination=dst,
                                         options={}, status="migrating", phase="Migrating (live) to kvm-b")
    MigrationSample.objects.create(migration=migration, elapsed_ms=250, stats=progress.compact_stats(STATS))

    async def scenario():
        comm = communicator(f"/ws/migrations/{migration.pk}/", viewer)
        connected, _ = await comm.connect()
        assert connected
        state = await comm.receive_json_from()
        await sync_to_async(broadcast.migration_progress)(migration.pk, {"t": 0.5, "pct": 80.0})
        live = await comm.receive_json_from(timeout=2)
        await sync_to_async(broadcast.migration_status)(migration.pk, {"status": "completing"})
        status = await comm.receive_json_from(timeout=2)
        await comm.disconnect()
        return state, live, status

    state, live, status = async_to_sync(scenario)()
    assert state["type"] == "migration.state" and state["migration"]["status"] == "migrating"
    assert state["samples"][0]["pct"] == 75.0
    assert live == {"type": "migration.progress", "sample": {"t": 0.5, "pct": 80.0}}
    assert status == {"type": "migration.status", "migration": {"status": "completing"}}


@pytest.mark.django_db(transaction=True)
def test_migration_socket_checks_the_user_and_the_migration(nobody, viewer):
    async def attempt(path, user):
        comm = communicator(path, user)
        connected, code = await comm.connect()
        await comm.disconnect()
        return connected, code

    assert async_to_sync(attempt)("/ws/migrations/1/", AnonymousUser()) == (False, 4401)
    assert async_to_sync(attempt)("/ws/migrations/1/", nobody) == (False, 4403)
    assert async_to_sync(attempt)("/ws/migrations/999999/", viewer) == (False, 4404)
