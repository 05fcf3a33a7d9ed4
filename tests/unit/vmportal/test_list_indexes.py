"""Every filter of a time-ordered list, and every lookup of an object's page, is served by an
index: the SQL the page really runs, asked of SQLite's planner (EXPLAIN QUERY PLAN), searches
the table through an index instead of scanning it (or scanning its time index backwards and
filtering, which reads the whole table when few rows match). Text searches (``icontains``)
are left out: no B-tree serves them.
"""

from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core.models import Job
from hosts.models import Host, VirtualMachine

pytestmark = [
    pytest.mark.django_db,
    # The plans are SQLite's (EXPLAIN QUERY PLAN); the PostgreSQL run of the unit tests skips them.
    pytest.mark.skipif(connection.vendor != "sqlite", reason="reads SQLite's query planner"),
]


def plans_for(client, url: str, params: dict, table: str) -> list[str]:
    """The plan of each statement the page ran that reads ``table``."""
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url, params).status_code == 200
    plans = []
    with connection.cursor() as cursor:
        for query in ctx.captured_queries:
            sql = query["sql"]
            if not sql.startswith("SELECT") or f'FROM "{table}"' not in sql:
                continue
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            plans.append(" / ".join(row[3] for row in cursor.fetchall()))
    assert plans, f"{url} {params} read nothing from {table}"
    return plans


def assert_searched(plans: list[str], table: str, *, in_order: bool = False) -> None:
    """Each plan searches ``table`` through an index; with ``in_order``, one that also gives the
    rows newest first (a filter that matches many rows: no sort of all of them for one page).
    An OR of two indexes (target id or name) sorts what it found, which is little."""
    for plan in plans:
        outer = plan.split(" / ")[0] if "MULTI-INDEX OR" not in plan else plan
        assert re.search(rf"SEARCH {table} USING (COVERING )?INDEX|SEARCH {table} USING INTEGER PRIMARY KEY", plan) \
            and not re.search(rf"SCAN {table}\b", outer), plan
        if in_order and "MULTI-INDEX OR" not in plan:
            assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan


@pytest.fixture
def host(db):
    return Host.objects.create(name="kvm-a", address="127.0.5.1", auth_method="portal_key")


# (query string, whether it may match many rows: then the index also gives the page's order).
# "Target" is an id or a name (an OR): each side has its index, what they find is sorted.
@pytest.mark.parametrize("params, in_order", [
    ({"target": "42"}, False), ({"target": "kvm-a"}, False), ({"target_type": "host", "target": "42"}, False),
    ({"action": "host.refresh"}, True), ({"action": "migration.*"}, True), ({"action": "migration.live.*"}, False),
    ({"actor": "ada"}, True), ({"result": "refused"}, True), ({"ip": "127.0.0.1"}, True),
    ({"request": "0123abcd"}, False), ({"job": "7"}, False),
])
def test_audit_filters(admin_client, params, in_order):
    plans = plans_for(admin_client, reverse("core:audit"), params, "core_auditevent")
    assert_searched(plans, "core_auditevent", in_order=in_order)


@pytest.mark.parametrize("params, in_order", [
    ({"status": "failed"}, True), ({"kind": "host_refresh"}, True), ({"target": "42"}, False),
    ({"target": "kvm-a"}, False), ({"target_type": "host", "target": "42"}, False), ({"target_type": "host"}, False),
])
def test_job_filters(admin_client, params, in_order):
    assert_searched(plans_for(admin_client, reverse("core:job_list"), params, "core_job"), "core_job",
                    in_order=in_order)


@pytest.mark.parametrize("params, in_order", [({"status": "failed"}, True), ({"host": "1"}, False)])
def test_migration_filters(admin_client, params, in_order):
    plans = plans_for(admin_client, reverse("migrations_app:migration_list"), params, "migrations_app_migration")
    assert_searched(plans, "migrations_app_migration", in_order=in_order)


def test_host_page_lookups(admin_client, host):
    Job.objects.create(kind="host_refresh", target_type="host", target_id=str(host.pk), timeout_s=60)
    url = reverse("hosts:host_detail", args=[host.pk])
    for table in ("core_job", "core_auditevent", "hosts_virtualmachine", "maintenance_evacuation",
                  "recovery_hostrecovery"):
        assert_searched(plans_for(admin_client, url, {}, table), table)


def test_guest_page_lookups(admin_client, host):
    vm = VirtualMachine.objects.create(host=host, uuid=uuid.uuid4(), name="web-1", state="running")
    url = reverse("hosts:vm_detail", args=[host.pk, vm.uuid])
    for table in ("core_job", "core_auditevent", "migrations_app_migration", "migrations_app_coldmigration",
                  "hosts_virtualdisk"):
        assert_searched(plans_for(admin_client, url, {}, table), table)


def test_saved_state_lists_are_read_in_order_through_an_index(admin_client, host):
    """The saved-states list (newest first, no filter) walks its time index instead of sorting the
    table; the guest page's card searches the guest's states through an index that also gives
    them newest first; the sweep finds the active saves and restores through an index of those only."""
    from guest_state.models import SavedState, StateRestore
    from guest_state.reconciler import states_reconcile

    vm = VirtualMachine.objects.create(host=host, uuid=uuid.uuid4(), name="web-1", state="running")
    SavedState.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=host, path="/srv/save/web-1",
                              status="saved")
    table = "guest_state_savedstate"
    for plan in plans_for(admin_client, reverse("guest_state:list"), {}, table):
        assert re.match(rf"SCAN {table} USING INDEX \w+", plan) and "TEMP B-TREE" not in plan, plan
    card = plans_for(admin_client, reverse("hosts:vm_detail", args=[host.pk, vm.uuid]), {}, table)
    assert_searched(card, table, in_order=True)

    with CaptureQueriesContext(connection) as ctx:
        states_reconcile()
    with connection.cursor() as cursor:
        for model in (SavedState, StateRestore):
            sql = next(q["sql"] for q in ctx.captured_queries if f'FROM "{model._meta.db_table}"' in q["sql"])
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            plan = " / ".join(row[3] for row in cursor.fetchall())
            assert re.search(rf"SEARCH {model._meta.db_table} USING (COVERING )?INDEX", plan), plan
