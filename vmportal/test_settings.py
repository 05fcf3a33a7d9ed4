"""Settings for the test suite: the real settings plus in-process jobs and channel layer.

The e2e tests do not use this module: they start daphne with vmportal.settings and a real redis.
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key")
# A fixed, test-only Fernet key so tests never write var/secrets.key.
os.environ.setdefault("VMPORTAL_SECRETS_KEY", "z6JPtstxHfaMV7NFepwL8yGIC5bwXXxq9zYOZ4x5a9c=")

os.environ.setdefault("VMPORTAL_AUDIT_KEY", "test-only-audit-key")

from .settings import *  # noqa: E402,F403

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
VMPORTAL_JOBS_INLINE = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Static files come from the app folders in tests; there is no collectstatic output.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
