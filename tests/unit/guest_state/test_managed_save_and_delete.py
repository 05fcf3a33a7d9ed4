"""Managed save (stop now, the next start resumes) and its discarding, and deleting a state file:
each claims or refuses like the other guest operations, audited, through the host session."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.actors import Actor
from core.choices import JobStatusChoices
from core.errors import ServiceRefused
from core.models import AuditEvent
from guest_state import jobs, services
from guest_state.choices import SavedStateStatusChoices as SS
from guest_state.models import SavedState
from hosts.models import GuestLease, VirtualMachine
from tests.fakes.fleet import make_host, make_vm

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system()


@pytest.fixture
def guest(fleet):
    host = make_host("kvm-a")
    vm = make_vm(host, "web-1")
    fake = fleet.adopt(host, fleet.guest_of(vm))
    return host, vm, fake


def run(job, vm, remove=False):
    jobs.managed_save_job(job.pk, vm.pk, remove)
    job.refresh_from_db()
    vm.refresh_from_db()
    return job


def test_managed_save_then_discard(guest):
    _host, vm, fake = guest
    job = services.managed_save_request(vm=vm, actor=SYSTEM, enqueue=False)
    assert GuestLease.objects.get(guest_uuid=vm.uuid).kind == "save"
    assert run(job, vm).status == JobStatusChoices.SUCCEEDED, job.error
    assert vm.managed_save and vm.state == "shutoff" and str(vm.uuid) in fake.managed_save
    assert not GuestLease.objects.exists()
    with pytest.raises(ServiceRefused, match="only a running or paused"):
        services.managed_save_request(vm=vm, actor=SYSTEM, enqueue=False)
    with pytest.raises(ServiceRefused, match="Confirm"):
        services.managed_save_request(vm=vm, remove=True, actor=SYSTEM, enqueue=False)
    job = services.managed_save_request(vm=vm, remove=True, confirmed=True, actor=SYSTEM, enqueue=False)
    assert run(job, vm, remove=True).status == JobStatusChoices.SUCCEEDED
    assert not vm.managed_save and str(vm.uuid) not in fake.managed_save
    actions = list(AuditEvent.objects.values_list("action", "result"))
    assert ("guest.managed_save", "ok") in actions and ("guest.managed_save_remove", "ok") in actions
    assert ("guest.managed_save_remove", "refused") in actions


def test_guest_card_shows_the_managed_save_and_its_confirmed_removal(operator_client, guest):
    _host, vm, _fake = guest
    VirtualMachine.objects.filter(pk=vm.pk).update(managed_save=True, state="shutoff")
    page = operator_client.get(reverse("hosts:vm_detail", args=[vm.host_id, vm.uuid])).content.decode()
    assert "Has a managed save" in page and 'id="managed-save-remove-form"' in page
    response = operator_client.post(reverse("guest_state:managed_save_remove", args=[vm.pk]), {}, follow=True)
    assert "Confirm that web-1" in response.content.decode() and not GuestLease.objects.exists()


def test_managed_save_button_on_a_running_guest(operator_client, guest):
    _host, vm, _fake = guest
    page = operator_client.get(reverse("hosts:vm_detail", args=[vm.host_id, vm.uuid])).content.decode()
    assert 'id="managed-save-form"' in page


def test_delete_a_state_file_confirmed_and_audited(guest):
    host, vm, fake = guest
    fake.put("/srv/save/web-1.state", "state")
    state = SavedState.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=host, path="/srv/save/web-1.state",
                                      status=SS.SAVED)
    with pytest.raises(ServiceRefused, match="Confirm the deletion"):
        services.state_delete_request(state=state, confirmed=False, actor=SYSTEM, enqueue=False)
    job = services.state_delete_request(state=state, confirmed=True, actor=SYSTEM, enqueue=False)
    jobs.state_delete_job(job.pk, state.pk)
    state.refresh_from_db()
    assert state.status == SS.DELETED and ["rm", "-f", "--", "/srv/save/web-1.state"] in fake.commands
    assert fake.read("/srv/save/web-1.state") is None
    assert AuditEvent.objects.filter(action="guest.state_delete", result="ok").count() == 2
    with pytest.raises(ServiceRefused, match="nothing to delete"):
        services.state_delete_request(state=state, confirmed=True, actor=SYSTEM, enqueue=False)


def test_delete_form_on_the_state_page(operator_client, guest):
    host, vm, _fake = guest
    state = SavedState.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=host, path="/srv/s/x.state",
                                      status=SS.SAVED)
    assert 'id="delete-form"' in operator_client.get(state.get_absolute_url()).content.decode()
    response = operator_client.post(reverse("guest_state:delete", args=[state.pk]), {}, follow=True)
    assert "Confirm the deletion" in response.content.decode()
