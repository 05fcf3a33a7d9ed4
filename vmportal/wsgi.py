"""WSGI entry point (HTTP only; websockets need the ASGI application via daphne)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.settings")
application = get_wsgi_application()
