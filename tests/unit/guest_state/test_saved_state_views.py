"""Pages: the guest page's saved-states card and Save form, the list, a state's page and its restore."""

from __future__ import annotations

import pytest
from django.urls import reverse

from guest_state.choices import SavedStateStatusChoices as SS
from guest_state.models import SavedState, StateRestore
from tests.fakes.fleet import make_host, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def vm(db):
    return make_vm(make_host("kvm-a"), "web-<1>")


def test_guest_page_offers_save_and_lists_states(operator_client, vm):
    SavedState.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=vm.host, path="/srv/s/x.state",
                              status=SS.SAVED, note="before <pg> 16")
    page = operator_client.get(reverse("hosts:vm_detail", args=[vm.host_id, vm.uuid])).content.decode()
    assert 'id="save-form"' in page and "before &lt;pg&gt; 16" in page


def test_save_posts_to_the_service_and_shows_the_state(operator_client, vm, django_capture_on_commit_callbacks):
    response = operator_client.post(reverse("guest_state:save", args=[vm.pk]),
                                    {"directory": "/srv/save", "note": "before upgrading postgres 15 to 16"})
    state = SavedState.objects.get()
    assert response.status_code == 302 and response["Location"] == state.get_absolute_url()
    assert operator_client.get(reverse("guest_state:list")).content.decode().count("before upgrading postgres 15 to 16") == 1


@pytest.mark.parametrize("data, words", [({"directory": "/etc"}, "system directory"),
                                         ({"share": "99999999999999999999999"}, "Choose a share")])
def test_bad_save_input_is_a_message_not_a_500(operator_client, vm, data, words):
    response = operator_client.post(reverse("guest_state:save", args=[vm.pk]), data, follow=True)
    assert response.status_code == 200 and words in response.content.decode()
    assert not SavedState.objects.exists()


def test_viewer_cannot_save(viewer_client, vm):
    assert viewer_client.post(reverse("guest_state:save", args=[vm.pk]), {"directory": "/srv"}).status_code == 403


def test_restore_form_queues_a_restore(operator_client, vm):
    state = SavedState.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=vm.host, path="/srv/s/x.state",
                                      status=SS.SAVED)
    page = operator_client.get(state.get_absolute_url()).content.decode()
    assert 'id="restore-form"' in page
    operator_client.post(reverse("guest_state:restore", args=[state.pk]), {"host": str(vm.host_id), "paused": "on"})
    restore = StateRestore.objects.get()
    assert restore.paused and restore.host == vm.host
