"""An evacuation item whose migration's work horse died: the migration is settled at once from
where the guest is, and the rolling queue goes on with the item (no sweep waited for)."""

from __future__ import annotations

import pytest

from core.actors import Actor
from core.choices import JobStatusChoices
from core.models import Job
from maintenance import planning, services
from maintenance.jobs import run_facts_job
from maintenance.queue import evacuation_advance
from maintenance.choices import ItemStatusChoices as IS
from migrations_app.choices import MigrationStatusChoices as MS
from migrations_app.models import Migration
from migrations_app.services import slots
from tests.rq_support import horse_killed, private_redis  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db


def test_a_lost_item_migration_is_settled_and_the_item_goes_on(evac, world, private_redis,
                                                               django_capture_on_commit_callbacks):
    plan = planning.evacuation_plan(host=evac["a"], check_hosts=False, concurrency=1)
    with django_capture_on_commit_callbacks(execute=False):  # the first item's job is queued, not run
        ev = services.evacuation_enter(host=evac["a"], actor=Actor.system(), plan=plan, concurrency=1)
        run_facts_job(ev.facts_job_id, ev.pk)  # the run's one check of the hosts, before any move
        evacuation_advance(ev.pk)
        slots.migrations_dispatch()  # its migration takes a slot and gets its job
    item = ev.items.exclude(migration=None).get()
    migration = item.migration
    # Its horse had started the migration when it was killed; libvirt never moved the guest.
    Migration.objects.filter(pk=migration.pk).update(status=MS.MIGRATING)
    Job.objects.filter(pk=migration.job_id).update(status=JobStatusChoices.RUNNING)

    with django_capture_on_commit_callbacks(execute=True):
        horse_killed(private_redis, migration.job_id, migration.pk)

    migration.refresh_from_db()
    assert migration.status == MS.FAILED and "killed by signal 9" in migration.error
    item.refresh_from_db()
    # Settled at once: retried with a fresh placement (a failure with the guest at home), and that run succeeded.
    assert item.migration_id != migration.pk and item.attempts == 2, (item.status, item.reason)
    assert item.status == IS.SUCCEEDED
    assert list(world.where(str(item.vm_uuid))) == [item.destination.name]

