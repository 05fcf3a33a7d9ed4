from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "VMPortal core (jobs, audit, roles, live events)"

    def ready(self):
        from . import converters, socket_access

        converters.register()
        socket_access.connect_receivers()
