"""Login throttling (django-axes): what the portal adds to it.

Axes counts failed logins per user name and per client address (AccessAttempt rows) and
refuses both once either reaches AXES_FAILURE_LIMIT, until AXES_COOLOFF_TIME has passed or an
admin unlocks (`manage.py axes_reset`, `axes_reset_username NAME`, `axes_reset_ip ADDRESS`,
or deleting the access attempt in the Django admin). Here: the client address it counts by
(REMOTE_ADDR only, as for the audit trail), the login page it answers a locked-out request
with, and the audit events for a lockout and for its end.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete
from django.shortcuts import render
from django.utils import timezone

from .actors import Actor
from .audit import audit_record_now
from .choices import AuditResultChoices

LOCKED_OUT_STATUS = 429


def client_ip(request) -> str | None:
    """The address failures are counted by: the peer's, never a header the client sets.

    Behind the reverse proxy, run daphne with --proxy-headers so the peer is the real client."""
    return request.META.get("REMOTE_ADDR") or None


# django-axes keeps the user name tried in a 255-character column; a longer one (sent to the
# admin's login or straight to the signal) would fail the insert on PostgreSQL with a 500.
USERNAME_KEPT = 150  # Django's own limit for a user name


def client_username(request, credentials) -> str | None:
    """The user name failures are counted by, bounded like Django's user names."""
    if credentials:
        name = credentials.get("username")
    else:
        name = getattr(request, "POST", {}).get("username") if request is not None else None
    return None if name is None else str(name)[:USERNAME_KEPT]


def cooloff_minutes() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)


def lockout_message() -> str:
    return (
        f"Too many failed logins for this user name or from this address: logins are refused for "
        f"{cooloff_minutes()} minutes. An administrator can unlock now: "
        "python manage.py axes_reset_username NAME (or axes_reset_ip ADDRESS)."
    )


def lockout_response(request, original_response=None, credentials=None):
    """The login page again, saying the login is locked and until when (AXES_LOCKOUT_CALLABLE)."""
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    form = AuthenticationForm(request, initial={"username": str(username)[:150]})
    context = {"form": form, "locked_out": lockout_message(), "next": request.POST.get("next", "")}
    return render(request, "core/login.html", context, status=LOCKED_OUT_STATUS)


def _user_named(username):
    if not username:
        return None
    return get_user_model()._default_manager.filter(username=username).first()


def _locked_out(sender, request, username, ip_address, **kwargs):
    # Axes signals on the failure that locks and again on every refused try while locked (each
    # counted, and each restarting the cool-off): the audit trail gets the one that reached the limit.
    if getattr(request, "axes_failures_since_start", None) != settings.AXES_FAILURE_LIMIT:
        return
    audit_record_now(
        actor=Actor(source_ip=ip_address, request_id=getattr(request, "request_id", ""), name="anonymous"),
        action="login.lockout",
        result=AuditResultChoices.REFUSED,
        target=_user_named(username),
        parameters={"username": (username or "")[:150], "ip_address": ip_address,
                    "failures": request.axes_failures_since_start},
        message=(f"Logins for {username or '(no name)'} and from {ip_address} locked for {cooloff_minutes()} minutes "
                 f"after {request.axes_failures_since_start} failed logins."),
    )


def _attempt_removed(sender, instance, **kwargs):
    if instance.failures_since_start < settings.AXES_FAILURE_LIMIT:
        return  # not a lockout: failures forgotten after a successful login
    expired = instance.attempt_time + settings.AXES_COOLOFF_TIME <= timezone.now()
    audit_record_now(
        actor=Actor.system(),
        action="login.unlock",
        result=AuditResultChoices.OK,
        target=_user_named(instance.username),
        parameters={"username": (instance.username or "")[:150], "ip_address": instance.ip_address,
                    "failures": instance.failures_since_start, "how": "expired" if expired else "reset"},
        message=(f"Login lockout of {instance.username or '(no name)'} from {instance.ip_address} "
                 + ("ended: its time ran out." if expired else "lifted by an administrator.")),
    )


def connect_receivers() -> None:
    from axes.models import AccessAttempt
    from axes.signals import user_locked_out

    user_locked_out.connect(_locked_out, dispatch_uid="vmportal.login_throttle.locked_out")
    post_delete.connect(_attempt_removed, sender=AccessAttempt, dispatch_uid="vmportal.login_throttle.unlocked")
