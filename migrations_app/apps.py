from django.apps import AppConfig


class MigrationsAppConfig(AppConfig):
    """Live migration of guests between hosts (a later issue; only the app skeleton for now)."""

    name = "migrations_app"
    verbose_name = "Live migrations"
