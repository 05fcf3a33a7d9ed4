"""The migrations list: filters in the query string, keyset pages newest first, only its first page live."""

import pytest
from django.urls import reverse

from migrations_app.choices import MigrationStatusChoices as S
from migrations_app.models import Migration

pytestmark = pytest.mark.django_db


def migrations(vm, src, dst, n, status=S.SUCCEEDED):
    return Migration.objects.bulk_create(Migration(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=src, destination=dst,
                                                   options={}, status=status) for _ in range(n))


def test_pages_and_filters(two_hosts, viewer_client):
    src, dst, vm = two_hosts
    migrations(vm, src, dst, 130)
    migrations(vm, dst, src, 3, status=S.FAILED)
    first = viewer_client.get(reverse("migrations_app:migration_list"))
    assert len(first.context["migrations"]) == 100 and b'data-live-partial' in first.content
    older = viewer_client.get(reverse("migrations_app:migration_list"), {"older": first.context["page"].older})
    assert len(older.context["migrations"]) == 33 and b'id="migration-rows" data-live' not in older.content
    assert len(viewer_client.get(reverse("migrations_app:migration_list"), {"status": "failed"}).context["migrations"]) == 3
    failed_rows = viewer_client.get(reverse("migrations_app:migration_rows"), {"status": "failed"}).content.decode()
    assert failed_rows.count("<tr>") == 3


@pytest.mark.parametrize("params", [{"status": "x"}, {"host": "1e400"}, {"host": "-3"}, {"older": "abc"},
                                    {"guest": "g" * 999}])
def test_hostile_query_strings_are_answered(two_hosts, viewer_client, params):
    response = viewer_client.get(reverse("migrations_app:migration_list"), params)
    assert response.status_code == 200
    assert viewer_client.get(reverse("migrations_app:migration_rows"), params).status_code == 200
