"""Audit for what Django itself does: logins, logouts, and users, groups and memberships.

These changes happen in Django's admin, in auth views and in `createsuperuser` as well as in
portal services, so they are caught where Django announces them (its signals) rather than in
one service. Each receiver writes in the transaction of the change that fired it.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from .actors import Actor, current_actor
from .audit import audit_record
from .choices import AuditResultChoices

# User fields whose changes are recorded with before/after values (the password only as changed).
USER_FIELDS = ("username", "first_name", "last_name", "email", "is_active", "is_staff", "is_superuser")
LOGIN_FIELDS = frozenset({"last_login"})
USERNAME_MAX = 150


def _ip(request) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def _actor_for(request, user) -> Actor:
    # The user logging in or out acts (request.user is not always set yet, or already gone).
    return Actor(user=user, source_ip=_ip(request), request_id=getattr(request, "request_id", ""))


def on_logged_in(sender, request, user, **kwargs):
    audit_record(actor=_actor_for(request, user),
                 action="auth.login", result=AuditResultChoices.OK, target=user,
                 message=f"{user.get_username()} logged in.")


def on_login_failed(sender, credentials, request=None, **kwargs):
    # Django has already replaced the password in credentials with asterisks.
    tried = str(credentials.get("username", ""))[:USERNAME_MAX]
    audit_record(actor=Actor(source_ip=_ip(request), request_id=getattr(request, "request_id", ""), name="anonymous"),
                 action="auth.login_failed", result=AuditResultChoices.FAILED,
                 parameters={"username": tried}, message=f"Failed login as {tried!r}.")


def on_logged_out(sender, request, user, **kwargs):
    if user is None:
        return
    audit_record(actor=_actor_for(request, user), action="auth.logout", result=AuditResultChoices.OK, target=user,
                 message=f"{user.get_username()} logged out.")


def _user_state(user) -> dict:
    return {name: getattr(user, name) for name in USER_FIELDS}


def remember_user_before(sender, instance, raw=False, update_fields=None, **kwargs):
    if raw or instance.pk is None:
        return
    old = sender.objects.filter(pk=instance.pk).values(*USER_FIELDS, "password").first()
    instance._audit_before = old


def on_user_saved(sender, instance, created, raw=False, update_fields=None, **kwargs):
    if raw or (update_fields is not None and set(update_fields) <= LOGIN_FIELDS):
        return  # a login stamping last_login is audited as the login itself
    after = _user_state(instance)
    if created:
        audit_record(actor=current_actor(), action="user.create", result=AuditResultChoices.OK, target=instance,
                     parameters={"changes": {k: [None, v] for k, v in after.items()}},
                     message=f"User {instance.get_username()} created.")
        return
    before = getattr(instance, "_audit_before", None) or {}
    changes = {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
    if before.get("password") is not None and before.get("password") != instance.password:
        changes["password"] = "changed"  # redacted by audit_record (its key), named in the message
    if not changes:
        return
    audit_record(actor=current_actor(), action="user.change", result=AuditResultChoices.OK, target=instance,
                 parameters={"changes": changes},
                 message=f"User {instance.get_username()} changed: {', '.join(sorted(changes))}.")


def on_user_deleted(sender, instance, **kwargs):
    audit_record(actor=current_actor(), action="user.delete", result=AuditResultChoices.OK,
                 parameters={"username": instance.get_username(), "id": instance.pk},
                 message=f"User {instance.get_username()} deleted.")


def remember_group_before(sender, instance, raw=False, **kwargs):
    if raw or instance.pk is None:
        return
    instance._audit_before_name = sender.objects.filter(pk=instance.pk).values_list("name", flat=True).first()


def on_group_saved(sender, instance, created, raw=False, **kwargs):
    if raw:
        return
    if created:
        audit_record(actor=current_actor(), action="group.create", result=AuditResultChoices.OK, target=instance,
                     parameters={"changes": {"name": [None, instance.name]}}, message=f"Group {instance.name} created.")
        return
    before = getattr(instance, "_audit_before_name", None)
    if before == instance.name:
        return
    audit_record(actor=current_actor(), action="group.change", result=AuditResultChoices.OK, target=instance,
                 parameters={"changes": {"name": [before, instance.name]}}, message=f"Group {before} renamed to {instance.name}.")


def on_group_deleted(sender, instance, **kwargs):
    audit_record(actor=current_actor(), action="group.delete", result=AuditResultChoices.OK,
                 parameters={"name": instance.name, "id": instance.pk}, message=f"Group {instance.name} deleted.")


def on_membership_changed(sender, instance, action, reverse, model, pk_set, **kwargs):
    """user.groups / group.user_set added, removed or cleared (either side of the relation)."""
    if action not in ("pre_clear", "post_add", "post_remove"):
        return
    if action == "pre_clear":
        # Which memberships a clear removes is only known before it happens.
        related = instance.user_set if reverse else instance.groups
        pk_set = set(related.values_list("pk", flat=True))
    if not pk_set:
        return
    verb = "add" if action == "post_add" else "remove"
    User = get_user_model()
    if reverse:  # instance is a Group, pk_set users
        pairs = [(user, instance) for user in User.objects.filter(pk__in=pk_set)]
    else:
        pairs = [(instance, group) for group in Group.objects.filter(pk__in=pk_set)]
    for user, group in pairs:
        audit_record(actor=current_actor(), action=f"user.group_{verb}", result=AuditResultChoices.OK, target=user,
                     parameters={"group": group.name, "changes": {"groups": [None, group.name] if verb == "add"
                                                                  else [group.name, None]}},
                     message=f"{user.get_username()} {'added to' if verb == 'add' else 'removed from'} group {group.name}.")


def connect() -> None:
    User = get_user_model()
    uid = "core.audit."
    user_logged_in.connect(on_logged_in, dispatch_uid=uid + "login")
    user_login_failed.connect(on_login_failed, dispatch_uid=uid + "login_failed")
    user_logged_out.connect(on_logged_out, dispatch_uid=uid + "logout")
    pre_save.connect(remember_user_before, sender=User, dispatch_uid=uid + "user_pre")
    post_save.connect(on_user_saved, sender=User, dispatch_uid=uid + "user_saved")
    post_delete.connect(on_user_deleted, sender=User, dispatch_uid=uid + "user_deleted")
    pre_save.connect(remember_group_before, sender=Group, dispatch_uid=uid + "group_pre")
    post_save.connect(on_group_saved, sender=Group, dispatch_uid=uid + "group_saved")
    post_delete.connect(on_group_deleted, sender=Group, dispatch_uid=uid + "group_deleted")
    m2m_changed.connect(on_membership_changed, sender=User.groups.through, dispatch_uid=uid + "membership")
