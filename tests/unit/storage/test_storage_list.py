"""The shares list: one page at a time, filtered and sorted by the query string."""

import pytest
from django.urls import reverse
from django.utils import timezone

from hosts.models import Host
from storage.models import Share

pytestmark = pytest.mark.django_db


def host(name):
    return Host.objects.create(name=name, address="127.0.4.1", auth_method="portal_key")


def share(server, path, *clients, status="new", verified=None):
    made = Share.objects.create(server=server, export_path=path, mount_path=f"/mnt{path}", status=status,
                                last_verified=verified)
    made.clients.add(*clients)
    return made


def exports(response):
    return [f"{row['share'].server.name}:{row['share'].export_path}" for row in response.context["rows"]]


@pytest.fixture
def three(db):
    a, b, c = host("nfs-a"), host("nfs-b"), host("kvm-c")
    share(a, "/srv/images", b, status="ready", verified=timezone.now())
    share(b, "/srv/backup", a, c, status="failed")
    share(a, "/srv/archive", status="new")
    return a, b, c


def test_status_sort_puts_problems_first(viewer_client):
    server = host("nfs-a")
    for status in ("ready", "new", "configuring", "degraded", "failed"):
        share(server, f"/srv/{status}", status=status)
    response = viewer_client.get(reverse("storage:share_list"), {"sort": "status"})
    assert exports(response) == [f"nfs-a:/srv/{s}" for s in ("failed", "degraded", "configuring", "new", "ready")]


def test_the_host_page_links_to_its_shares(admin_client, three):
    a, _b, _c = three
    html = admin_client.get(reverse("hosts:host_detail", args=[a.pk])).content.decode()
    assert f'href="{reverse("storage:share_list")}?host={a.pk}"' in html


def test_shares_come_one_page_at_a_time(viewer_client):
    server = host("nfs-a")
    for i in range(120):
        share(server, f"/srv/vol{i:03d}")
    first = viewer_client.get(reverse("storage:share_list"))
    assert len(exports(first)) == 50 and first.context["page"].paginator.count == 120
    assert b"Next" in first.content and "page=2" in first.content.decode()
    third = viewer_client.get(reverse("storage:share_list"), {"page": 3})
    assert exports(third)[0] == "nfs-a:/srv/vol100" and len(exports(third)) == 20


@pytest.mark.parametrize("params, expected", [
    ({"q": "backup"}, ["nfs-b:/srv/backup"]),
    ({"q": "KVM-C"}, ["nfs-b:/srv/backup"]),  # a client's name
    ({"q": "/mnt/srv/arch"}, ["nfs-a:/srv/archive"]),  # the mount path
    ({"status": "ready"}, ["nfs-a:/srv/images"]),
])
def test_filters_select_shares(viewer_client, three, params, expected):
    response = viewer_client.get(reverse("storage:share_list"), params)
    assert exports(response) == expected and not response.context["filter_errors"]


def test_host_filter_keeps_what_a_host_serves_or_mounts(viewer_client, three):
    a, _b, c = three
    response = viewer_client.get(reverse("storage:share_list"), {"host": c.pk, "sort": "export"})
    assert exports(response) == ["nfs-b:/srv/backup"]
    assert response.context["host_shown"] == c and response.context["all_hosts_query"] == "sort=export"
    assert "kvm-c</a> serves or mounts" in response.content.decode()
    assert exports(viewer_client.get(reverse("storage:share_list"), {"host": a.pk})) == [
        "nfs-a:/srv/archive", "nfs-a:/srv/images", "nfs-b:/srv/backup"]


@pytest.mark.parametrize("sort, expected", [
    ("server", ["nfs-a:/srv/archive", "nfs-a:/srv/images", "nfs-b:/srv/backup"]),
    ("-server", ["nfs-b:/srv/backup", "nfs-a:/srv/archive", "nfs-a:/srv/images"]),  # ties by export path
    ("export", ["nfs-a:/srv/archive", "nfs-b:/srv/backup", "nfs-a:/srv/images"]),
    ("-export", ["nfs-a:/srv/images", "nfs-b:/srv/backup", "nfs-a:/srv/archive"]),
    ("status", ["nfs-b:/srv/backup", "nfs-a:/srv/archive", "nfs-a:/srv/images"]),  # failed, new, ready
    ("-status", ["nfs-a:/srv/images", "nfs-a:/srv/archive", "nfs-b:/srv/backup"]),
])
def test_sorting_both_ways(viewer_client, three, sort, expected):
    response = viewer_client.get(reverse("storage:share_list"), {"sort": sort})
    assert exports(response) == expected
    assert response.context["sort_marks"][sort.lstrip("-")] == ("▼" if sort.startswith("-") else "▲")


def test_sort_headings_toggle_and_keep_the_filter(viewer_client, three):
    response = viewer_client.get(reverse("storage:share_list"), {"q": "srv", "sort": "export", "page": "1"})
    queries = response.context["sort_queries"]
    assert "sort=-export" in queries["export"] and "q=srv" in queries["export"] and "page" not in queries["export"]
    assert 'name="sort" value="export"' in response.content.decode()


def test_rows_carry_their_links(viewer_client, three):
    row = viewer_client.get(reverse("storage:share_list"), {"q": "backup"}).context["rows"][0]
    assert row["url"] == reverse("storage:share_detail", args=[row["share"].pk])
    assert row["server_url"] == reverse("hosts:host_detail", args=[row["share"].server_id])
    assert [name for name, _url in row["clients"]] == ["kvm-c", "nfs-a"]


@pytest.mark.parametrize("params", [
    {"status": "<script>"}, {"host": "1.5"}, {"host": "9" * 400}, {"sort": "password"}, {"sort": "server__secret"},
    {"q": "x" * 5000}, {"page": "-1"}, {"page": "9" * 400}, {"q": "\x00"},
])
def test_hostile_query_strings_say_what_is_wrong(viewer_client, three, params):
    response = viewer_client.get(reverse("storage:share_list"), params)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>" not in html.split("<main", 1)[-1].replace("<script src=", "")
    if set(params) - {"page"}:
        assert response.context["filter_errors"] and response.context["rows"] == []
        assert "The filter is not valid" in html
    else:
        assert len(response.context["rows"]) == 3
