import os
import secrets

from django.core.management.base import BaseCommand

from core.actors import Actor
from core.services import admin_ensure

USERNAME = "admin"


class Command(BaseCommand):
    help = (
        "Create the 'admin' user (Admin role) if missing. The password comes from "
        "VMPORTAL_ADMIN_PASSWORD, or is generated and printed once."
    )

    def handle(self, *args, **options):
        password = os.environ.get("VMPORTAL_ADMIN_PASSWORD") or None
        from django.contrib.auth import get_user_model

        exists = get_user_model().objects.filter(username=USERNAME).exists()
        generated = None
        if not exists and password is None:
            generated = password = secrets.token_urlsafe(15)
        _, created, changed = admin_ensure(username=USERNAME, password=password, actor=Actor.cli())
        if created and generated:
            self.stdout.write(f"Created user '{USERNAME}' with password: {generated}")
            self.stdout.write("It is shown only now; set VMPORTAL_ADMIN_PASSWORD to choose your own.")
        elif created:
            self.stdout.write(f"Created user '{USERNAME}' with the password from VMPORTAL_ADMIN_PASSWORD.")
        elif changed:
            self.stdout.write(f"User '{USERNAME}' exists; password set from VMPORTAL_ADMIN_PASSWORD.")
        else:
            self.stdout.write(f"User '{USERNAME}' exists; password unchanged.")
