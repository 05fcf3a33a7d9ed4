"""Inventory pages: forms validate, POSTs go through services, hostile names stay escaped."""

import pytest
from django.urls import reverse

from core.choices import JobStatusChoices
from core.models import AuditEvent, Job
from hosts.choices import HostStatusChoices
from hosts.models import Host, VirtualMachine
from tests.fakes.fleet import make_domain

pytestmark = pytest.mark.django_db

HOSTILE_NAME = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_add_host_form_shows_field_errors(admin_client):
    response = admin_client.post(
        reverse("hosts:host_add"),
        {"name": "bad name;", "address": "10.0.0.300", "ssh_port": "70000", "ssh_user": "root",
         "auth_method": "portal_key", "libvirt_uri": "qemu+ssh://h/system?command=sh"},
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert set(errors) >= {"name", "address", "ssh_port", "libvirt_uri"}
    assert b"Please correct the fields marked below" in response.content
    assert not Host.objects.exists()


def test_add_host_requires_key_or_password_for_that_method(admin_client, fleet):
    base = {"name": "kvm-x", "address": "192.0.2.5", "ssh_port": "22", "ssh_user": "root"}
    response = admin_client.post(reverse("hosts:host_add"), {**base, "auth_method": "private_key"})
    assert "private_key_text" in response.context["form"].errors
    response = admin_client.post(reverse("hosts:host_add"), {**base, "auth_method": "private_key", "private_key_text": "not a key"})
    assert "private_key_text" in response.context["form"].errors
    response = admin_client.post(reverse("hosts:host_add"), {**base, "auth_method": "password"})
    assert "password" in response.context["form"].errors
    # libvirt over SSH needs a key: a password is only enough with a tcp/tls libvirt URI.
    response = admin_client.post(reverse("hosts:host_add"), {**base, "auth_method": "password", "password": "pw"})
    assert "logs in with a key" in str(response.context["form"].errors["auth_method"])
    response = admin_client.post(
        reverse("hosts:host_add"),
        {**base, "auth_method": "password", "password": "pw", "libvirt_uri": "qemu+tls://192.0.2.5/system"},
    )
    assert response.status_code == 302 and Host.objects.get().auth_method == "password"


def test_add_host_then_confirm_fingerprint(admin_client, fleet, django_capture_on_commit_callbacks):
    hv = fleet.add("host-192.0.2.5", address="192.0.2.5", domains=[make_domain("web")])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("hosts:host_add"),
            {"name": "kvm-x", "address": "192.0.2.5", "ssh_port": "22", "ssh_user": "root", "auth_method": "portal_key"},
        )
    host = Host.objects.get(name="kvm-x")
    assert response.status_code == 302 and response["Location"] == reverse("hosts:host_trust", args=[host.pk])

    page = admin_client.get(reverse("hosts:host_trust", args=[host.pk]))
    assert hv.host_key.fingerprint in page.content.decode()
    assert page.context["portal_key"].public_key in page.content.decode()  # to install on the host

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("hosts:host_trust", args=[host.pk]), {"fingerprint": hv.host_key.fingerprint})
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.host_key_fingerprint == hv.host_key.fingerprint and host.status == HostStatusChoices.REACHABLE
    add = AuditEvent.objects.get(action="host.add")
    assert add.actor_label == "ada" and add.source_ip == "127.0.0.1" and add.request_id


def test_confirming_a_stale_fingerprint_is_refused(admin_client, fleet, django_capture_on_commit_callbacks):
    fleet.add("host-192.0.2.5", address="192.0.2.5")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("hosts:host_add"),
            {"name": "kvm-x", "address": "192.0.2.5", "ssh_port": "22", "ssh_user": "root", "auth_method": "portal_key"},
        )
    host = Host.objects.get()
    response = admin_client.post(reverse("hosts:host_trust", args=[host.pk]), {"fingerprint": "SHA256:old"}, follow=True)
    assert b"not the one the host presented" in response.content
    host.refresh_from_db()
    assert not host.host_key


def test_inventory_escapes_hostile_guest_names(viewer_client, trusted_host, fleet):
    from core.actors import Actor
    from hosts.services import host_inventory_save

    hv = fleet[trusted_host.address]
    host_inventory_save(
        host=trusted_host, facts=hv.facts, os_release=None, domains=[make_domain(HOSTILE_NAME)], storage={},
        actor=Actor.system(),
    )
    vm = VirtualMachine.objects.get()
    for url in (
        reverse("hosts:inventory"),
        reverse("hosts:host_detail", args=[trusted_host.pk]),
        reverse("hosts:vm_detail", args=[trusted_host.pk, vm.uuid]),
    ):
        html = viewer_client.get(url).content.decode()
        assert HOSTILE_NAME not in html
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_inventory_flags_duplicate_host_identity(viewer_client, trusted_host, fleet, private_key_pem, django_capture_on_commit_callbacks):
    from core.actors import Actor
    from hosts.choices import HostAuthMethodChoices
    from hosts.services import HostConnection, host_create

    clone = fleet.add("host-192.0.2.11", address="192.0.2.11", hostname="kvm-a", host_uuid=fleet[trusted_host.address].host_uuid)
    with django_capture_on_commit_callbacks(execute=True):
        host_create(
            name="kvm-clone",
            connection=HostConnection(address=clone.address, ssh_port=22, ssh_user="root",
                                      auth_method=HostAuthMethodChoices.PRIVATE_KEY, private_key_pem=private_key_pem),
            actor=Actor.system(), trusted_host_key=clone.host_key,
        )
    html = viewer_client.get(reverse("hosts:inventory")).content.decode()
    assert "same hostname as kvm-clone" in html and "same host UUID as kvm-a" in html


def test_vm_page_offers_actions_by_role(viewer_client, operator_client, trusted_host):
    vm = VirtualMachine.objects.get(name="web-1")
    url = reverse("hosts:vm_detail", args=[trusted_host.pk, vm.uuid])
    action_url = reverse("hosts:vm_action", args=[trusted_host.pk, vm.uuid, "destroy"])
    assert action_url not in viewer_client.get(url).content.decode()
    assert action_url in operator_client.get(url).content.decode()


def test_vm_action_needs_operator_and_confirm_post(viewer_client, operator_client, trusted_host, django_capture_on_commit_callbacks):
    vm = VirtualMachine.objects.get(name="web-1")
    url = reverse("hosts:vm_action", args=[trusted_host.pk, vm.uuid, "destroy"])
    assert viewer_client.get(url).status_code == 403
    assert viewer_client.post(url).status_code == 403
    confirm = operator_client.get(url)
    assert confirm.status_code == 200 and b"Force off" in confirm.content
    assert not Job.objects.filter(kind="vm.destroy").exists()  # GET changes nothing
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(url)
    job = Job.objects.get(kind="vm.destroy")
    assert response["Location"] == reverse("core:job_detail", args=[job.pk])
    job.refresh_from_db()
    assert job.status == JobStatusChoices.SUCCEEDED
    vm.refresh_from_db()
    assert vm.state == "shutoff"
    job_page = operator_client.get(response["Location"]).content.decode()
    assert f"/ws/jobs/{job.pk}/" in job_page and "Force off: web-1" in job_page


def test_unknown_action_and_guest_are_404(operator_client, trusted_host):
    vm = VirtualMachine.objects.get(name="web-1")
    assert operator_client.get(reverse("hosts:vm_action", args=[trusted_host.pk, vm.uuid, "reboot"])).status_code == 404
    assert operator_client.get(f"/hosts/{trusted_host.pk}/vms/not-a-uuid/").status_code == 404
    assert operator_client.get(f"/hosts/{trusted_host.pk}/vms/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_refused_action_shows_reason(operator_client, trusted_host):
    vm = VirtualMachine.objects.get(name="db-1")  # shut off
    response = operator_client.post(reverse("hosts:vm_action", args=[trusted_host.pk, vm.uuid, "shutdown"]), follow=True)
    assert b"not possible while db-1 is shut off" in response.content


def test_refresh_button_needs_post_and_operator(viewer_client, operator_client, trusted_host, settings):
    settings.VMPORTAL_JOBS_INLINE = False
    url = reverse("hosts:host_refresh", args=[trusted_host.pk])
    assert viewer_client.post(url).status_code == 403
    assert operator_client.get(url).status_code == 405
    response = operator_client.post(url)
    job = Job.objects.get(kind="host.refresh", status=JobStatusChoices.QUEUED)
    assert response["Location"] == reverse("core:job_detail", args=[job.pk])


def test_host_page_shows_error_and_hint(viewer_client, trusted_host):
    Host.objects.filter(pk=trusted_host.pk).update(
        status=HostStatusChoices.UNREACHABLE, last_error="10.0.0.1:22 refused the connection", last_error_hint="Start sshd."
    )
    html = viewer_client.get(reverse("hosts:host_detail", args=[trusted_host.pk])).content.decode()
    assert "refused the connection" in html and "What to do: Start sshd." in html


def test_partials_render_for_live_updates(viewer_client, trusted_host):
    vm = VirtualMachine.objects.get(name="web-1")
    assert b"web-1" in viewer_client.get(reverse("hosts:inventory_tables")).content
    assert b"Facts" in viewer_client.get(reverse("hosts:host_detail_body", args=[trusted_host.pk])).content
    assert b"Disks" in viewer_client.get(reverse("hosts:vm_detail_body", args=[trusted_host.pk, vm.uuid])).content


def test_audit_page_lists_events_newest_first(viewer_client, trusted_host):
    html = viewer_client.get(reverse("core:audit")).content.decode()
    assert "host.add" in html and 'data-audit-socket="/ws/audit/"' in html
