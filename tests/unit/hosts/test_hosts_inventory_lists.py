"""The inventory page: one page of hosts and guests at a time, filtered and sorted by the query string."""

import uuid

import pytest
from django.urls import reverse

from hosts.models import Host, HostFacts, HostGroup, HostGroupGrant, VirtualDisk, VirtualMachine

pytestmark = pytest.mark.django_db


def host_with_guests(name, n, *, state="running", tags=(), maintenance=False, memory_kib=1024 * 1024):
    host = Host.objects.create(name=name, address="127.0.2.1", auth_method="portal_key", tags=list(tags),
                               in_maintenance=maintenance)
    HostFacts.objects.create(host=host, hostname=name, cpus=16, memory_total_kib=64 * 1024 * 1024)
    VirtualMachine.objects.bulk_create(
        VirtualMachine(host=host, uuid=uuid.uuid4(), name=f"{name}-g{i:03d}", state=state, vcpus=2,
                       memory_kib=memory_kib) for i in range(n))
    return host


def names(response):
    return [row["name"] for row in response.context["guest_rows"]]


def test_guests_come_one_page_at_a_time(viewer_client):
    host_with_guests("kvm-a", 120)
    first = viewer_client.get(reverse("hosts:inventory"))
    assert len(names(first)) == 50 and first.context["guest_page"].paginator.count == 120
    third = viewer_client.get(reverse("hosts:inventory"), {"page": 3})
    assert names(third)[0] == "kvm-a-g100" and len(names(third)) == 20
    assert len(names(viewer_client.get(reverse("hosts:inventory"), {"per": 200}))) == 120


def test_host_summary_counts_guests_by_state_and_what_runs(viewer_client):
    host = host_with_guests("kvm-a", 3)
    VirtualMachine.objects.create(host=host, uuid=uuid.uuid4(), name="off", state="shutoff", vcpus=8,
                                  memory_kib=8 * 1024 * 1024)
    summary = viewer_client.get(reverse("hosts:inventory")).context["host_rows"][0]["summary"]
    assert summary.guests == 4 and summary.running_vcpus == 6 and summary.running_memory_kib == 3 * 1024 * 1024
    assert [(state, n) for state, _label, n in summary.by_state] == [("running", 3), ("shutoff", 1)]


@pytest.mark.parametrize("params, expected", [
    ({"q": "kvm-b-g00"}, {"kvm-b-g000", "kvm-b-g001"}),
    ({"state": "shutoff"}, {"kvm-b-g000", "kvm-b-g001"}),
    ({"tag": "GPU"}, {"kvm-b-g000", "kvm-b-g001"}),
    ({"maintenance": "yes"}, {"kvm-c-g000"}),
    ({"local_disks": "yes"}, {"kvm-a-g000"}),
])
def test_filters_select_guests(viewer_client, params, expected):
    a = host_with_guests("kvm-a", 2)
    host_with_guests("kvm-b", 2, state="shutoff", tags=["gpu"])
    host_with_guests("kvm-c", 1, maintenance=True)
    VirtualDisk.objects.create(vm=a.vms.get(name="kvm-a-g000"), target="vda", storage="local")
    response = viewer_client.get(reverse("hosts:inventory"), params)
    assert set(names(response)) == expected
    assert not response.context["filter_errors"]


def test_host_filter_and_uuid_search(viewer_client):
    a = host_with_guests("kvm-a", 2)
    host_with_guests("kvm-b", 2)
    assert {r["host_id"] for r in viewer_client.get(reverse("hosts:inventory"), {"host": a.pk}).context["guest_rows"]} == {a.pk}
    vm = a.vms.first()
    assert names(viewer_client.get(reverse("hosts:inventory"), {"q": str(vm.uuid)[:13].upper()})) == [vm.name]


def test_sorting_by_memory_both_ways(viewer_client):
    host_with_guests("kvm-a", 2, memory_kib=1024)
    host_with_guests("kvm-b", 2, memory_kib=4096)
    ascending = names(viewer_client.get(reverse("hosts:inventory"), {"sort": "memory"}))
    descending = names(viewer_client.get(reverse("hosts:inventory"), {"sort": "-memory"}))
    assert ascending[:2] == ["kvm-a-g000", "kvm-a-g001"] and descending[:2] == ["kvm-b-g000", "kvm-b-g001"]


def test_filter_narrows_the_hosts_a_user_may_see(operator, trusted_host):
    from django.test import Client
    from django.contrib.auth.models import Group

    operator.groups.remove(Group.objects.get(name="Operator"))
    mine = host_with_guests("kvm-mine", 2)
    host_with_guests("kvm-other", 2)
    group = HostGroup.objects.create(name="team")
    group.hosts.add(mine)
    HostGroupGrant.objects.create(group=group, user=operator, role="Viewer")
    client = Client()
    client.force_login(operator)
    response = client.get(reverse("hosts:inventory"), {"q": "g00"})
    assert set(names(response)) == {"kvm-mine-g000", "kvm-mine-g001"}
    assert [row["host"].name for row in response.context["host_rows"]] == ["kvm-mine"]


@pytest.mark.parametrize("params", [
    {"state": "<script>"}, {"host": "1.5"}, {"host": "9" * 400}, {"sort": "password"}, {"q": "x" * 5000},
    {"maintenance": "maybe"}, {"page": "-1"}, {"page": "9" * 400}, {"hpage": "abc"}, {"per": "100000"},
    {"status": "\x00"}, {"q": "\x00"},
])
def test_hostile_query_strings_say_what_is_wrong(viewer_client, params):
    host_with_guests("kvm-a", 3)
    response = viewer_client.get(reverse("hosts:inventory"), params)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>" not in html.split("<main", 1)[-1].replace('<script src=', '')
    if set(params) & {"state", "host", "sort", "q", "maintenance", "status"} and response.context["filter_errors"]:
        assert "The filter is not valid" in html and response.context["guest_rows"] == []
    assert viewer_client.get(reverse("hosts:inventory_tables"), params).status_code == 200


def test_invalid_filters_are_named(viewer_client):
    host_with_guests("kvm-a", 3)
    response = viewer_client.get(reverse("hosts:inventory"), {"state": "exploded", "host": "x"})
    errors = " ".join(response.context["filter_errors"])
    assert "State:" in errors and "Host:" in errors and response.context["guest_rows"] == []


def test_rows_carry_their_links(viewer_client):
    host_with_guests("kvm-a", 50)
    rows = viewer_client.get(reverse("hosts:inventory")).context["guest_rows"]
    assert rows[0]["url"] == reverse("hosts:vm_detail", args=[rows[0]["host_id"], rows[0]["uuid"]])
    assert rows[0]["host_url"] == reverse("hosts:host_detail", args=[rows[0]["host_id"]])


def test_hosts_come_one_page_at_a_time(viewer_client):
    for i in range(30):
        Host.objects.create(name=f"kvm-{i:02d}", address="127.0.3.1", auth_method="portal_key")
    first = viewer_client.get(reverse("hosts:inventory"))
    assert len(first.context["host_rows"]) == 25 and b"Next hosts" in first.content
    second = viewer_client.get(reverse("hosts:inventory"), {"hpage": 2})
    assert [r["host"].name for r in second.context["host_rows"]][0] == "kvm-25"


def host_names(response):
    return [row["host"].name for row in response.context["host_rows"]]


@pytest.mark.parametrize("hsort, expected", [
    ("name", ["kvm-a", "kvm-b", "kvm-c", "kvm-d"]),
    ("-name", ["kvm-d", "kvm-c", "kvm-b", "kvm-a"]),
    ("guests", ["kvm-d", "kvm-c", "kvm-a", "kvm-b"]),  # 0, 1, 3, 3 guests: a tie reads by name
    ("-guests", ["kvm-a", "kvm-b", "kvm-c", "kvm-d"]),
    ("memory", ["kvm-d", "kvm-b", "kvm-c", "kvm-a"]),  # no facts (0), 8, 16, 48 GiB in use
    ("-memory", ["kvm-a", "kvm-c", "kvm-b", "kvm-d"]),
    ("status", ["kvm-c", "kvm-b", "kvm-a", "kvm-d"]),  # key mismatch, unreachable, unknown, reachable
    ("-status", ["kvm-d", "kvm-a", "kvm-b", "kvm-c"]),
])
def test_hosts_sort_by_a_column_both_ways(viewer_client, hsort, expected):
    gib = 1024 * 1024
    for name, guests, used_gib, status in (("kvm-a", 3, 48, "unknown"), ("kvm-b", 3, 8, "unreachable"),
                                           ("kvm-c", 1, 16, "key_mismatch")):
        host = host_with_guests(name, guests)
        Host.objects.filter(pk=host.pk).update(status=status)
        HostFacts.objects.filter(host=host).update(memory_total_kib=64 * gib, memory_free_kib=(64 - used_gib) * gib)
    Host.objects.create(name="kvm-d", address="127.0.2.4", auth_method="portal_key", status="reachable")
    response = viewer_client.get(reverse("hosts:inventory"), {"hsort": hsort})
    assert host_names(response) == expected and not response.context["filter_errors"]
    # The guest table keeps its own order; the live partial sorts the same way.
    assert names(response)[0] == "kvm-a-g000"
    assert host_names(viewer_client.get(reverse("hosts:inventory_tables"), {"hsort": hsort})) == expected


def test_host_sort_is_stable_across_pages(viewer_client):
    for i in range(30):
        host_with_guests(f"kvm-{i:02d}", i % 3)
    pages = [host_names(viewer_client.get(reverse("hosts:inventory"), {"hsort": "-guests", "hpage": n}))
             for n in (1, 2)]
    seen = pages[0] + pages[1]
    assert len(seen) == 30 and len(set(seen)) == 30
    expected = sorted((f"kvm-{i:02d}" for i in range(30)), key=lambda name: (-(int(name[4:]) % 3), name))
    assert seen == expected


def test_host_sort_headings_toggle_and_keep_the_filter(viewer_client):
    host_with_guests("kvm-a", 1, tags=["gpu"])
    response = viewer_client.get(reverse("hosts:inventory"), {"tag": "gpu", "hsort": "guests", "hpage": "1"})
    queries = response.context["host_sort_queries"]
    assert "hsort=-guests" in queries["guests"] and "tag=gpu" in queries["guests"]
    assert "hpage" not in queries["guests"] and "hsort=memory" in queries["memory"]
    assert response.context["host_sort_marks"]["guests"] == "▲"
    html = response.content.decode()
    assert 'name="hsort" value="guests"' in html  # the filter form keeps the sort


@pytest.mark.parametrize("hsort", ["password", "facts__secret", "-", "name,guests" * 100, "\x00"])
def test_unknown_host_sort_keys_are_refused_with_a_message(viewer_client, hsort):
    host_with_guests("kvm-a", 1)
    response = viewer_client.get(reverse("hosts:inventory"), {"hsort": hsort})
    assert response.status_code == 200
    assert response.context["host_rows"] == [] and any("Sort hosts by" in e for e in response.context["filter_errors"])
