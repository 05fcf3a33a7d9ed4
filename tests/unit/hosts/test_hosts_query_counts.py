"""List and detail pages run the same number of queries whatever the number of rows."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core.models import Job
from hosts.models import Host, HostFacts, VirtualMachine

pytestmark = pytest.mark.django_db


def grow(host: Host, user, n: int) -> None:
    """n more jobs of the host (by a user), guests on it, and other hosts with facts."""
    Job.objects.bulk_create(Job(kind="host_refresh", target_type="host", target_id=str(host.pk), timeout_s=60,
                                created_by=user) for _ in range(n))
    VirtualMachine.objects.bulk_create(VirtualMachine(host=host, uuid=uuid.uuid4(), name=f"g-{uuid.uuid4().hex[:8]}",
                                                      state="running") for _ in range(n))
    for _ in range(n):
        other = Host.objects.create(name=f"x-{uuid.uuid4().hex[:8]}", address="127.0.1.1", auth_method="portal_key")
        HostFacts.objects.create(host=other, hostname=f"hn-{other.pk}", host_uuid=str(uuid.uuid4()))


def queries_of(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("page", ["hosts:host_detail", "hosts:host_detail_body"])
def test_host_page_queries_stay_constant(admin_client, admin, trusted_host, page, django_assert_max_num_queries):
    url = reverse(page, args=[trusted_host.pk])
    grow(trusted_host, admin, 1)
    few = queries_of(admin_client, url)
    grow(trusted_host, admin, 40)
    with django_assert_max_num_queries(few):
        admin_client.get(url)


def test_host_page_reads_only_the_hosts_that_share_its_identity(admin_client, admin, trusted_host):
    grow(trusted_host, admin, 5)
    twin = Host.objects.create(name="kvm-twin", address="127.0.1.2", auth_method="portal_key")
    HostFacts.objects.create(host=twin, hostname=trusted_host.facts.hostname.upper(), host_uuid="other")
    with CaptureQueriesContext(connection) as ctx:
        html = admin_client.get(reverse("hosts:host_detail", args=[trusted_host.pk])).content.decode()
    assert "Same hostname as kvm-twin" in html
    # No read of every host's facts: each read names this host, or the hostname / UUID it shares.
    for sql in (q["sql"] for q in ctx.captured_queries if '"hosts_hostfacts"' in q["sql"]):
        where = sql.partition(" WHERE ")[2]
        assert ('"hosts_hostfacts"."hostname"' in where or '"hosts_host"."id" =' in where
                or '"hosts_hostfacts"."host_id" =' in where), sql


@pytest.mark.parametrize("page", ["hosts:inventory", "hosts:inventory_tables"])
def test_inventory_queries_stay_constant(admin_client, admin, trusted_host, page, django_assert_max_num_queries):
    url = reverse(page)
    grow(trusted_host, admin, 2)
    few = queries_of(admin_client, url)
    grow(trusted_host, admin, 60)
    with django_assert_max_num_queries(few):
        admin_client.get(url)
