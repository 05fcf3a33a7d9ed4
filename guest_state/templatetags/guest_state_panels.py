"""The guest page's saved-states card (hosts' page loads this library; hosts never imports us)."""

from django import template

from storage.models import Share

from ..models import SavedState

register = template.Library()
CARD_LIMIT = 20


@register.inclusion_tag("guest_state/partials/vm_saved_states.html", takes_context=True)
def vm_saved_states(context, vm):
    states = SavedState.objects.filter(vm_uuid=vm.uuid).select_related("host").prefetch_related("restores")
    return {
        "vm": vm, "states": states[:CARD_LIMIT], "can_operate": context.get("can_operate"),
        "lease": context.get("lease"), "shares": Share.objects.select_related("server"),
        "managed_saved": vm.managed_save,
        "can_save": bool(context.get("can_operate")) and not context.get("lease") and vm.state in ("running", "paused"),
        "csrf_token": context.get("csrf_token"),
    }
