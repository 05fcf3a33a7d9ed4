"""ASGI entry point: HTTP through Django, websockets through Channels (run with daphne)."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.settings")
# Django must be set up before importing consumers (they import models).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from core.routing import websocket_urlpatterns as core_websockets  # noqa: E402
from hosts.routing import websocket_urlpatterns as hosts_websockets  # noqa: E402
from maintenance.routing import websocket_urlpatterns as maintenance_websockets  # noqa: E402
from migrations_app.routing import websocket_urlpatterns as migrations_websockets  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(
                core_websockets + hosts_websockets + migrations_websockets + maintenance_websockets
            ))
        ),
    }
)
