"""Core writes: users and roles."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from .actors import Actor
from .audit import audit_record
from .choices import AuditResultChoices, RoleChoices


@transaction.atomic
def admin_ensure(*, username: str, password: str | None, actor: Actor) -> tuple[object, bool, bool]:
    """Make sure `username` exists as an active superuser in the Admin group.

    Creates the user when missing (password required then). When the user exists and a
    different password is given, the password is set to it (which ends that user's sessions);
    otherwise the password is left unchanged. Returns (user, created, password_changed).
    """
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    created = user is None
    password_changed = False
    if created:
        if not password:
            raise ValueError("A password is needed to create the admin user.")
        user = User.objects.create_superuser(username=username, email="", password=password)
    else:
        user.is_superuser = True
        user.is_staff = True
        user.is_active = True
        if password and not user.check_password(password):
            user.set_password(password)
            password_changed = True
        user.save()
    admin_group, _ = Group.objects.get_or_create(name=RoleChoices.ADMIN.value)
    user.groups.add(admin_group)
    audit_record(
        actor=actor,
        action="user.ensure_admin",
        result=AuditResultChoices.OK,
        target=user,
        parameters={"username": username, "created": created, "password_changed": password_changed},
        message="Admin user created." if created else "Admin user checked.",
    )
    return user, created, password_changed
