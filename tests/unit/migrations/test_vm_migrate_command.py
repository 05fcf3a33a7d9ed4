"""`manage.py vm_migrate`: the same service from a terminal, with figures and exit codes."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from migrations_app.choices import MigrationStatusChoices as S
from migrations_app.models import Migration
from tests.fakes.fleet import make_domain, make_vm

pytestmark = pytest.mark.django_db


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("vm_migrate", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_wait_runs_it_here_and_prints_the_figures(two_hosts, world):
    src, dst, vm = two_hosts
    out, _ = run("web-1", "--to", "KVM-B", "--wait", "--option", "auto_converge=yes")
    migration = Migration.objects.get()
    assert migration.status == S.SUCCEEDED and migration.options["auto_converge"] is True
    assert not migration.run_by_worker and migration.job.status == "succeeded"
    assert f"Migration #{migration.pk}: web-1 kvm-a → kvm-b (live)" in out
    assert "Succeeded: web-1 runs on kvm-b" in out
    assert "downtime       42 ms" in out and "total time     1.23 s" in out
    assert " pass " in out  # progress lines while it ran


def test_json_output(two_hosts, world):
    src, dst, vm = two_hosts
    out, _ = run(str(vm.uuid), "--to", "kvm-b", "--wait", "--json")
    data = json.loads(out)
    assert data["status"] == "succeeded" and data["downtime_ms"] == 42 and data["destination"] == "kvm-b"
    assert data["url"] == f"/migrations/{data['id']}/" and data["samples"] > 0


def test_without_wait_it_is_queued_for_a_worker(two_hosts, world):
    out, _ = run("web-1", "--to", "kvm-b")
    migration = Migration.objects.get()
    assert migration.status == S.QUEUED and migration.run_by_worker
    assert f"Migration #{migration.pk} of web-1 to kvm-b queued" in out


def test_preflight_failure_exits_non_zero_with_checks_and_fixes(two_hosts, world):
    world["kvm-b"].domains = {d.uuid: d for d in [make_domain("web-1", state="shutoff")]}  # a guest of that name
    out = io.StringIO()
    with pytest.raises(CommandError, match="failed"):
        call_command("vm_migrate", "web-1", "--to", "kvm-b", "--wait", stdout=out)
    text = out.getvalue()
    assert "FAIL domain-conflict" in text and "fix: On kvm-b: check it is not in use" in text
    assert not any(c[0] == "migrate" for c in world.jobs.calls)


def test_failed_migration_exits_non_zero(two_hosts, world):
    from tests.fakes.fleet import migration_error

    world.jobs.fail_with = migration_error("unable to connect to server at 'kvm-b:49152': Connection refused")
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"migration #\d+ failed"):
        call_command("vm_migrate", "web-1", "--to", "kvm-b", "--wait", stdout=out)
    assert "error: " in out.getvalue() and "Connection refused" in out.getvalue()


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope", "--to", "kvm-b"], "No guest 'nope' in the inventory"),
        (["web-1", "--to", "nowhere"], "No host 'nowhere' in the inventory (hosts: kvm-a, kvm-b)"),
        (["web-1", "--to", "kvm-b", "--option", "bandwidth_mibps=fast"], "bandwidth_mibps: 'fast' is not a whole number"),
        (["web-1", "--to", "kvm-b", "--option", "rm -rf=/"], "unknown option"),
        (["web-1", "--to", "kvm-b", "--option", "peer_to_peer=no", "--option", "tunnelled=yes"], "requires peer-to-peer"),
        (["web-1", "--to", "kvm-b", "--offline", "--option", "live=true"], "contradict"),
        (["web-1", "--to", "kvm-a"], "already runs on kvm-a"),
    ],
)
def test_bad_input_is_a_clear_error(two_hosts, world, args, message):
    with pytest.raises(CommandError) as error:
        run(*args)
    assert message in str(error.value)
    assert not Migration.objects.exists()


def test_a_name_on_several_hosts_is_ambiguous(two_hosts, world):
    src, dst, vm = two_hosts
    other = make_vm(dst, "web-1")
    with pytest.raises(CommandError) as error:
        run("web-1", "--to", "kvm-b")
    text = str(error.value)
    assert "names 2 guests" in text and str(vm.uuid) in text and str(other.uuid) in text and "Give the UUID" in text


def test_control_characters_in_names_stay_out_of_the_terminal(two_hosts, world):
    with pytest.raises(CommandError) as error:
        run("evil\x1b[2Jname", "--to", "kvm-b")
    assert "\x1b" not in str(error.value)


@pytest.fixture
def recorded_queues(settings, monkeypatch):
    """A worker's queues, recorded, nothing run: what --wait leaves to the workers stays there."""
    import core.jobs

    enqueued = []

    class Queue:
        def __init__(self, name):
            self.name = name

        def enqueue_call(self, *, func, args, **kwargs):
            enqueued.append((self.name, func, tuple(args)))

    settings.VMPORTAL_JOBS_INLINE = False
    monkeypatch.setattr(core.jobs.django_rq, "get_queue", Queue)
    return enqueued


@pytest.fixture
def probe(settings, monkeypatch):
    import migrations_app.heartbeat as heartbeat_module

    heartbeat_module._load.cache_clear()
    monkeypatch.setattr(heartbeat_module, "import_string",
                        lambda path: lambda name, since: {"max_gap_s": 0.25, "continuous": True, "beats": 30})
    settings.VMPORTAL_GUEST_HEARTBEAT_PROBE = "tests.fake:probe"
    yield
    heartbeat_module._load.cache_clear()


def test_wait_returns_at_succeeded_and_leaves_the_figures_to_a_worker(two_hosts, world, recorded_queues, probe,
                                                                     django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = run("web-1", "--to", "kvm-b", "--wait")
    migration = Migration.objects.get()
    assert migration.status == S.SUCCEEDED and migration.follow_up == "running"
    assert migration.heartbeat_gap_s is None and "heartbeat gap" not in out
    follow_up = migration.job.__class__.objects.get(kind="migration.follow_up")
    assert f"figures        follow (job #{follow_up.pk}" in out and "--wait-figures" in out
    assert recorded_queues == [("migrations", "migrations_app.jobs.migration_follow_up_job",
                                (follow_up.pk, migration.pk))]


def test_wait_figures_measures_them_here_too(two_hosts, world, recorded_queues, probe,
                                            django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = run("web-1", "--to", "kvm-b", "--wait-figures", "--json")
    data = json.loads(out)
    assert data["status"] == "succeeded" and data["follow_up"] == "done" and data["follow_up_note"] == ""
    assert data["heartbeat"] == {"max_gap_s": 0.25, "continuous": True, "beats": 30}
    assert recorded_queues == []  # nothing left for a worker: the refreshes and the pause ran here
    out, _ = run("web-1", "--to", "kvm-a", "--wait-figures")
    assert "heartbeat gap  0.250 s (30 beats, continuous)" in out and "figures" not in out
