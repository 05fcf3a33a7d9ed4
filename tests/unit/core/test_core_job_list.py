"""The jobs page: filtered in the query string, keyset pages newest first, hostile input answered."""

import pytest
from django.urls import reverse

from core.models import Job

pytestmark = pytest.mark.django_db


def jobs(n, **fields):
    return Job.objects.bulk_create(Job(kind=fields.get("kind", "host.refresh"), timeout_s=60,
                                       status=fields.get("status", "succeeded"),
                                       target_type="host", target_id=str(i % 3), target_label=f"kvm-{i % 3}")
                                   for i in range(n))


def test_pages_walk_older_and_back(viewer_client):
    jobs(230)
    first = viewer_client.get(reverse("core:job_list"))
    assert len(first.context["jobs"]) == 100 and first.context["page"].newer is None
    second = viewer_client.get(reverse("core:job_list"), {"older": first.context["page"].older})
    third = viewer_client.get(reverse("core:job_list"), {"older": second.context["page"].older})
    seen = [j.pk for r in (first, second, third) for j in r.context["jobs"]]
    assert len(seen) == 230 == len(set(seen)) and seen == sorted(seen, reverse=True)
    back = viewer_client.get(reverse("core:job_list"), {"newer": second.context["page"].newer})
    assert [j.pk for j in back.context["jobs"]] == [j.pk for j in first.context["jobs"]]


def test_filters_by_status_kind_and_target(viewer_client):
    jobs(5)
    jobs(2, status="failed", kind="vm.start")
    response = viewer_client.get(reverse("core:job_list"), {"status": "failed", "kind": "vm.start"})
    assert len(response.context["jobs"]) == 2
    assert len(viewer_client.get(reverse("core:job_list"), {"target": "kvm-1"}).context["jobs"]) == 3


@pytest.mark.parametrize("params", [{"status": "<b>"}, {"older": "9" * 500}, {"newer": "1-x"}, {"kind": "k" * 999},
                                    {"older": "99999999999999999-1"}])
def test_hostile_query_strings_are_answered(viewer_client, params):
    jobs(3)
    response = viewer_client.get(reverse("core:job_list"), params)
    assert response.status_code == 200 and b"<b>" not in response.content
