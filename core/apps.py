from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "VMPortal core (jobs, audit, roles, live events)"
