from django.apps import AppConfig


class MigrationsAppConfig(AppConfig):
    """Live and offline migration of guests between hosts: wizard, preflight, runner, reconciler."""

    name = "migrations_app"
    verbose_name = "Live migrations"
