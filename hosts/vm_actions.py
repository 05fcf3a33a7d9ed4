"""Which power actions make sense in which guest state (pure)."""

from .choices import VMActionChoices, VMStateChoices

_ALLOWED_STATES = {
    VMActionChoices.START: {VMStateChoices.SHUTOFF, VMStateChoices.CRASHED},
    VMActionChoices.SHUTDOWN: {VMStateChoices.RUNNING, VMStateChoices.BLOCKED, VMStateChoices.PAUSED},
    VMActionChoices.DESTROY: {
        VMStateChoices.RUNNING,
        VMStateChoices.BLOCKED,
        VMStateChoices.PAUSED,
        VMStateChoices.SHUTDOWN,
        VMStateChoices.CRASHED,
        VMStateChoices.PMSUSPENDED,
    },
}


def vm_action_allowed(action: str, state: str, *, persistent: bool = True) -> bool:
    """True when `action` can be applied to a guest in `state`.

    A transient guest (not persistent) disappears when it stops, so it cannot be started again.
    """
    if action == VMActionChoices.START and not persistent:
        return False
    return state in _ALLOWED_STATES.get(action, set())


def vm_actions_available(state: str, *, persistent: bool = True) -> list[VMActionChoices]:
    return [action for action in VMActionChoices if vm_action_allowed(action, state, persistent=persistent)]
