"""ASGI entry point: HTTP through Django, websockets through Channels (run with daphne)."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.settings")
# Django must be set up before importing consumers (they import models).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from core.consumers import UnknownPathConsumer  # noqa: E402
from core.worker import load_url_conf  # noqa: E402
from core.routing import websocket_urlpatterns as core_websockets  # noqa: E402
from hosts.routing import websocket_urlpatterns as hosts_websockets  # noqa: E402
from maintenance.routing import websocket_urlpatterns as maintenance_websockets  # noqa: E402
from migrations_app.routing import websocket_urlpatterns as migrations_websockets  # noqa: E402
from vmportal.origins import SiteOriginValidator  # noqa: E402

# The first request would otherwise load the URL conf (every app's views) on its way; a confirm
# that is the first request after a start would pay that before its migration starts.
load_url_conf()

websocket_urlpatterns = (
    core_websockets + hosts_websockets + migrations_websockets + maintenance_websockets
    # Last: any other path is refused with a close, not a routing error and a traceback.
    + [re_path(r"", UnknownPathConsumer.as_asgi())]
)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SiteOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), settings.VMPORTAL_SITE_ORIGINS
        ),
    }
)
