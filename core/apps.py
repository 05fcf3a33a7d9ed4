from django.apps import AppConfig
from django.conf import settings


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "VMPortal core (jobs, audit, roles, live events)"

    def ready(self):
        from . import ids, login_throttle, socket_access

        ids.register()
        socket_access.connect_receivers()
        login_throttle.connect_receivers()

        from . import receivers, registry
        from .audit_chain import checkpoint_if_due

        receivers.connect()
        # Checks once a minute; signs the head at most every VMPORTAL_AUDIT_CHECKPOINT_MINUTES.
        registry.register_periodic("audit.checkpoint", checkpoint_if_due,
                                   every_s=lambda: min(60.0, settings.VMPORTAL_AUDIT_CHECKPOINT_MINUTES * 60.0))
