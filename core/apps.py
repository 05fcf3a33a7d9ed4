from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "VMPortal core (jobs, audit, roles, live events)"

    def ready(self):
        from . import ids, login_throttle, socket_access

        ids.register()
        socket_access.connect_receivers()
        login_throttle.connect_receivers()
