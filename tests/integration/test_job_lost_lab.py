"""A live migration whose work horse died is settled within 10 s, from where the lab's libvirt
says the guest runs: RQ's report (the real worker class's handler, as RQ calls it when the
horse dies) hands the record to the reconciler at once."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from core.choices import JobStatusChoices
from core.jobs import job_enqueue
from core.models import Job
from hosts.adapters import libvirt as lv
from hosts.adapters import migration as mg
from hosts.models import VirtualMachine
from lab_support import SYSTEM, heartbeat_guest, vm_row, where
from lab_support import onboarded  # noqa: F401 - fixture used by name
from migrations_app.choices import MigrationStatusChoices as S
from migrations_app.models import Migration
from migrations_app.options import MigrationOptions, libvirt_flags
from migrations_app.services import live
from tests.rq_support import horse_killed, private_redis  # noqa: F401 - fixture used by name

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def test_a_killed_horse_after_libvirt_moved_the_guest_is_settled_within_10_s(lab, onboarded, private_redis, settings):
    settings.VMPORTAL_JOBS_INLINE = True  # the reconcile job runs right after its commit, as a free worker would
    src_lab, dst_lab = lab["hosts"][2], lab["hosts"][0]
    src, dst = onboarded[src_lab["name"]], onboarded[dst_lab["name"]]
    with heartbeat_guest(src_lab) as (_name, domain_uuid):
        vm = vm_row(src, domain_uuid)
        options = MigrationOptions()
        migration = live.migration_request(vm=vm, destination=dst, options=options, actor=SYSTEM, run_by_worker=False)
        job = job_enqueue(kind="migration.run", func="core.jobs.job_function", target=migration, timeout_s=600,
                          actor=SYSTEM, enqueue=False)
        now = timezone.now()
        Job.objects.filter(pk=job.pk).update(status=JobStatusChoices.RUNNING, started=now)
        Migration.objects.filter(pk=migration.pk).update(status=S.MIGRATING, job=job, started=now,
                                                         migration_started=now, heartbeat=now)
        # The horse had libvirt migrate the guest, then was killed before recording anything.
        with lv.open_connection(src_lab["libvirt_uri"]) as conn:
            mg.migrate(conn, domain_uuid=domain_uuid, dest_uri=dst_lab["libvirt_uri"], flags=libvirt_flags(options),
                       params={})

        killed_at = time.monotonic()
        horse_killed(private_redis, job.pk, migration.pk)
        settled_s = time.monotonic() - killed_at

        migration.refresh_from_db()
        print(f"\nsettled {settled_s:.2f} s after the horse's death: {migration.status}: {migration.outcome}")
        assert settled_s < 10
        assert migration.status == S.SUCCEEDED, (migration.outcome, migration.repair)
        assert "killed by signal 9" in migration.error
        assert VirtualMachine.objects.get(uuid=domain_uuid).host_id == dst.pk
        assert where(lab["hosts"], domain_uuid) == {dst_lab["name"]: "running"}
