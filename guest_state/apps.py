from django.apps import AppConfig


class GuestStateConfig(AppConfig):
    """Save a guest's state to a file, restore it (same host or one that sees the file and disks)."""

    name = "guest_state"
    verbose_name = "Saved guest states"

    def ready(self):
        from . import receivers  # noqa: F401  (a lost snapshot job is settled at once)
