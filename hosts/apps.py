from django.apps import AppConfig


class HostsConfig(AppConfig):
    name = "hosts"
    verbose_name = "Hosts and guests inventory"

    def ready(self):
        from core.encryption import register_encrypted_field
        from core.roles import register_scoped_role_rank

        from . import receivers  # noqa: F401  (a lost power action is settled at once)
        from .models import Host, HostChange, PortalKey

        # What `manage.py secrets_rotate` re-encrypts.
        register_encrypted_field(Host, "secret_encrypted")
        register_encrypted_field(PortalKey, "private_key_encrypted")
        register_encrypted_field(HostChange, "secret_encrypted")
        # Roles granted on host groups open the pages that list hosts (each host is checked itself).
        from .permissions import scoped_role_rank

        register_scoped_role_rank(scoped_role_rank)
