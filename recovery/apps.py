from django.apps import AppConfig


class RecoveryConfig(AppConfig):
    """Bring the guests of a dead host back on other hosts (an admin's decision, never automatic)."""

    name = "recovery"
    verbose_name = "Host recovery"

    def ready(self):
        from core import registry
        from core.encryption import register_encrypted_field

        from .models import RecoveryItem
        from .sweep import recovery_sweep

        register_encrypted_field(RecoveryItem, "definition_encrypted")
        # Items whose job ended without an outcome; stale copies on hosts that came back.
        registry.register_periodic("recovery.sweep", recovery_sweep, every_s=30)
