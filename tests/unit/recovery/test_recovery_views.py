"""Pages: the host page offers Recover guests when the host is unreachable, the plan page with
its fencing confirmation, the recovery's page, and bad input as a message, never a 500."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.encryption import encrypt_secret
from hosts.models import HostFacts, VirtualDisk
from recovery.models import HostRecovery
from tests.fakes.fleet import make_host, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def dead(db):
    host = make_host("kvm-<a>", status="unreachable", last_error="No route to host")
    other = make_host("kvm-b")
    HostFacts.objects.create(host=other, arch="x86_64", memory_free_kib=8 * 1024 * 1024, domain_types=["qemu"])
    vm = make_vm(host, "db-<1>", definition_encrypted=encrypt_secret("<domain/>"))
    VirtualDisk.objects.create(vm=vm, target="vda", source_type="file", source="/shared/db.qcow2", storage="shared")
    local = make_vm(host, "hb-1", definition_encrypted=encrypt_secret("<domain/>"))
    VirtualDisk.objects.create(vm=local, target="vda", source_type="file", source="/var/lib/hb.img", storage="local")
    return host, other


def test_host_page_offers_recovery_to_admins_only(admin_client, operator_client, dead):
    host, _ = dead
    url = reverse("hosts:host_detail", args=[host.pk])
    assert 'id="recover-guests"' in admin_client.get(url).content.decode()
    page = operator_client.get(url).content.decode()
    assert 'id="recover-guests"' not in page and "an admin decides" in page
    assert operator_client.get(reverse("recovery:plan", args=[host.pk])).status_code == 403


def test_plan_page_shows_moves_left_and_the_fencing_words(admin_client, dead):
    host, _ = dead
    page = admin_client.get(reverse("recovery:plan", args=[host.pk])).content.decode()
    assert "db-&lt;1&gt;" in page and "kvm-b" in page and "not on shared storage" in page
    assert "I have made sure kvm-&lt;a&gt; is powered off" in page and 'id="recovery-form"' in page


@pytest.mark.parametrize("data, words", [
    ({}, "Confirm that kvm-&lt;a&gt; is powered off"),
    ({"fenced": "on", "destination": "99999999999999999999999"}, "Choose a destination"),
    ({"fenced": "on", "fingerprint": "0" * 16}, "The plan changed"),
])
def test_bad_confirmations_are_messages(admin_client, dead, data, words):
    host, _ = dead
    response = admin_client.post(reverse("recovery:plan", args=[host.pk]), data, follow=True)
    assert response.status_code == 200 and words in response.content.decode()
    assert not HostRecovery.objects.exists()


def test_confirmed_recovery_lands_on_its_page(admin_client, dead, django_capture_on_commit_callbacks):
    host, _ = dead
    response = admin_client.post(reverse("recovery:plan", args=[host.pk]), {"fenced": "on"})
    recovery = HostRecovery.objects.get()
    assert response.status_code == 302 and response["Location"] == recovery.get_absolute_url()
    page = admin_client.get(recovery.get_absolute_url()).content.decode()
    assert "db-&lt;1&gt;" in page and "hb-1" in page and 'http-equiv="refresh"' in page


@pytest.mark.parametrize("role, button", [("admin", True), ("operator", False), ("viewer", False)])
def test_a_refused_recovery_offers_check_again_to_admins(request, dead, role, button):
    from recovery.choices import RecoveryStatusChoices as RS

    host, _ = dead
    recovery = HostRecovery.objects.create(host=host, status=RS.REFUSED, error="kvm-<a> answered over SSH just now.",
                                           fencing_statement="I have made sure it is off")
    client = request.getfixturevalue(f"{role}_client")
    response = client.get(recovery.get_absolute_url())
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="check-again"' in page and "kvm-&lt;a&gt; answered over SSH" in page
    assert (f'href="{reverse("recovery:plan", args=[host.pk])}">Check again' in page) is button
    running = HostRecovery.objects.create(host=host, status=RS.RUNNING, fencing_statement="x")
    assert 'id="check-again"' not in client.get(running.get_absolute_url()).content.decode()
