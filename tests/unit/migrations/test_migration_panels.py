"""The migration panels the migrations app adds to a guest's page (migration_panels tags),
and the share test storage adds to it (storage_tags.host_has_share)."""

from __future__ import annotations

import pytest
from django.template import Context, Template
from django.urls import reverse

from migrations_app.choices import MigrationStatusChoices as M
from migrations_app.models import Migration
from migrations_app.templatetags.migration_panels import RECENT_MIGRATIONS, vm_migrations
from storage.choices import ShareStatusChoices
from storage.models import Share

from migration_fakes import make_host, make_vm

pytestmark = pytest.mark.django_db


def _migration(vm, destination, status) -> Migration:
    return Migration.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, source=vm.host,
                                    destination=destination, status=status, options={})


def vm_page(vm) -> str:
    return reverse("hosts:vm_detail", args=[vm.host_id, vm.uuid])


def test_a_guest_never_migrated_says_so(operator_client):
    vm = make_vm(make_host("kvm-a"))
    page = operator_client.get(vm_page(vm)).content.decode()
    assert "Never migrated by the portal." in page and 'id="migrate-button"' in page


def test_a_migration_under_way_replaces_the_buttons_with_its_link(operator_client, viewer_client):
    src, dst = make_host("kvm-a"), make_host("kvm-b")
    vm = make_vm(src)
    done = _migration(vm, dst, M.SUCCEEDED)
    running = _migration(vm, dst, M.MIGRATING)
    page = operator_client.get(vm_page(vm)).content.decode()
    link = reverse("migrations_app:migration_detail", args=[running.pk])
    assert f'href="{link}">Migration #{running.pk} migrating…' in page
    assert 'id="migrate-button"' not in page and 'id="cold-why"' not in page
    assert f'>#{done.pk}</a>' in page and "Never migrated" not in page
    # Viewers see the history, not the operator's buttons.
    viewer_page = viewer_client.get(vm_page(vm)).content.decode()
    assert f'>#{done.pk}</a>' in viewer_page and f'href="{link}">Migration' not in viewer_page


def test_the_history_shows_the_most_recent_migrations_only():
    src, dst = make_host("kvm-a"), make_host("kvm-b")
    vm = make_vm(src)
    for _ in range(RECENT_MIGRATIONS + 2):
        _migration(vm, dst, M.SUCCEEDED)
    moves = vm_migrations(vm)
    assert len(moves.migrations) == RECENT_MIGRATIONS and moves.active_migration is None


@pytest.mark.parametrize("role, expected", [("server", "True"), ("client", "True"), ("elsewhere", "False")])
def test_host_has_share(role, expected):
    server, client, other = make_host("nfs-1"), make_host("kvm-a"), make_host("kvm-b")
    share = Share.objects.create(server=server, export_path="/srv/vm", mount_path="/mnt/vm",
                                 status=ShareStatusChoices.READY)
    share.clients.add(client)
    host = {"server": server, "client": client, "elsewhere": other}[role]
    rendered = Template("{% load storage_tags %}{% host_has_share host as seen %}{{ seen }}").render(
        Context({"host": host}))
    assert rendered == expected
