from django.apps import AppConfig


class HostsConfig(AppConfig):
    name = "hosts"
    verbose_name = "Hosts and guests inventory"

    def ready(self):
        from core import registry
        from core.encryption import register_encrypted_field
        from core.roles import register_scoped_role_rank

        from . import receivers  # noqa: F401  (a lost power action is settled at once)
        from .models import Host, HostChange, PortalKey, VirtualMachine

        # What `manage.py secrets_rotate` re-encrypts.
        register_encrypted_field(Host, "secret_encrypted")
        register_encrypted_field(PortalKey, "private_key_encrypted")
        register_encrypted_field(HostChange, "secret_encrypted")
        register_encrypted_field(VirtualMachine, "definition_encrypted")

        from .services import load_retention_sweep

        # Load history: 5-minute points rolled into hourly ones after a week, dropped after 90 days.
        registry.register_periodic("hosts.load_retention", load_retention_sweep, every_s=3600)
        # Roles granted on host groups open the pages that list hosts (each host is checked itself).
        from core.roles import register_role_facts_loader, register_target_scope

        from .permissions import load_grants, scoped_role_rank, targets_for

        register_scoped_role_rank(scoped_role_rank)
        # Checking many open sockets together reads their users' grants in one query.
        register_role_facts_loader(load_grants)
        # Jobs and audit events show to a user granted on host groups only when their target's hosts do.
        register_target_scope(targets_for)
