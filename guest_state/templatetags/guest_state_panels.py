"""The guest page's saved-states card (hosts' page loads this library; hosts never imports us)."""

from django import template

from storage.models import Share

from .. import snapshot_services
from ..choices import SnapshotStatusChoices as S
from ..models import GuestSnapshot, SavedState
from ..snapshot_rules import MAX_NAME_CHARS, MAX_NOTE_CHARS, snapshot_verdict

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


@register.inclusion_tag("guest_state/partials/vm_snapshots.html", takes_context=True)
def vm_snapshots(context, vm):
    """The guest's snapshots as last checked with libvirt, and whether one can be taken (judged on
    the inventory's rows: no host is asked while the page renders)."""
    snapshots = (GuestSnapshot.objects.filter(vm_uuid=vm.uuid).exclude(status=S.DELETED)
                 .select_related("host", "requested_by"))[:CARD_LIMIT]
    verdict = snapshot_verdict(snapshot_services.inventory_facts(vm))
    checked = [s.checked for s in snapshots if s.checked]
    can_operate = bool(context.get("can_operate"))
    return {
        "vm": vm, "snapshots": snapshots, "verdict": verdict, "can_operate": can_operate,
        "lease": context.get("lease"), "checked": max(checked) if checked else None,
        "can_snapshot": can_operate and not context.get("lease") and verdict.ok,
        "max_name": MAX_NAME_CHARS, "max_note": MAX_NOTE_CHARS, "csrf_token": context.get("csrf_token"),
    }
