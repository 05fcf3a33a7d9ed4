"""VMPortal settings, read from the environment.

Environment variables (all optional in development, see each one below):
  DJANGO_DEBUG=1            turn on debug mode (off by default)
  DJANGO_SECRET_KEY         required unless DJANGO_DEBUG=1
  DJANGO_ALLOWED_HOSTS      comma-separated, default "localhost,127.0.0.1,[::1]"
  DJANGO_CSRF_TRUSTED_ORIGINS  comma-separated origins, e.g. "https://portal.example.org"
  DJANGO_STATIC_ROOT        where collectstatic writes, default <repo>/staticfiles
  DJANGO_SECURE_COOKIES=1   session/CSRF cookies only over HTTPS (set when served over TLS)
  DATABASE_URL              default: SQLite file var/vmportal.sqlite3
  REDIS_URL                 default redis://127.0.0.1:6390/0 (the private redis of `make run`)
  VMPORTAL_SECRETS_KEY      Fernet key encrypting SSH keys/passwords at rest; required unless
                            DJANGO_DEBUG=1, in which case var/secrets.key is generated once (0600)
  VMPORTAL_AUDIT_KEY        key signing the audit trail's checkpoints (HMAC-SHA256), different from
                            both keys above; required unless DJANGO_DEBUG=1 (then var/audit.key)
  VMPORTAL_AUDIT_CHECKPOINT_MINUTES  at most this often a periodic checkpoint signs the chain's
                            head (and on every export), default 10
  VMPORTAL_AUDIT_CHECKPOINT_FILE  also append each checkpoint to this file (one JSON line), outside
                            the database; unset by default
  VMPORTAL_INVENTORY_REFRESH_SECONDS  period of the full inventory refresh (queued by
                            `manage.py watch_hosts`), default 300
  VMPORTAL_MAX_OUTGOING / VMPORTAL_MAX_INCOMING  migrations running at once out of / into one
                            host, default 2 each; more wait queued for a free slot
  VMPORTAL_MIGRATION_MAX_SECONDS  longest a migration without a completion timeout may run
                            before the portal aborts it, default 14400 (4 h)
  VMPORTAL_GUEST_HEARTBEAT_PROBE  dotted path ("package.module:function") of a callable
                            (guest_name, since_unix) -> {"max_gap_s", "continuous", "beats"} | None
                            telling how long the guest itself stopped; unset by default
                            (`make run` and the lab tests set lab.heartbeat:probe)
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _dev_key(path: Path, make) -> str:
    """Read a development key file, creating it with make() (mode 0600) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        key = make()
        handle.write(key + "\n")
    return key


DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set DJANGO_SECRET_KEY (or DJANGO_DEBUG=1 for development).")
    SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"

VMPORTAL_SECRETS_KEY = os.environ.get("VMPORTAL_SECRETS_KEY", "")
if not VMPORTAL_SECRETS_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "Set VMPORTAL_SECRETS_KEY to a Fernet key "
            "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')."
        )
    VMPORTAL_SECRETS_KEY = _dev_key(VAR_DIR / "secrets.key", lambda: Fernet.generate_key().decode())

VMPORTAL_AUDIT_KEY = os.environ.get("VMPORTAL_AUDIT_KEY", "")
if not VMPORTAL_AUDIT_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "Set VMPORTAL_AUDIT_KEY to a random string (python -c 'import secrets; print(secrets.token_urlsafe(48))')."
        )
    VMPORTAL_AUDIT_KEY = _dev_key(VAR_DIR / "audit.key", lambda: secrets.token_urlsafe(48))
if VMPORTAL_AUDIT_KEY in (SECRET_KEY, VMPORTAL_SECRETS_KEY):
    # Whoever holds the other keys must not be able to re-sign a rewritten trail.
    raise ImproperlyConfigured("VMPORTAL_AUDIT_KEY must differ from DJANGO_SECRET_KEY and VMPORTAL_SECRETS_KEY.")
VMPORTAL_AUDIT_CHECKPOINT_MINUTES = int(os.environ.get("VMPORTAL_AUDIT_CHECKPOINT_MINUTES", "10"))
VMPORTAL_AUDIT_CHECKPOINT_FILE = os.environ.get("VMPORTAL_AUDIT_CHECKPOINT_FILE", "")

ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_rq",
    "django_filters",
    "core",
    "hosts",
    "migrations_app",
    "storage",
    "maintenance",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.middleware.RequestIdMiddleware",
    "core.middleware.AuditRefusedMiddleware",
    "core.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "vmportal.urls"
WSGI_APPLICATION = "vmportal.wsgi.application"
ASGI_APPLICATION = "vmportal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.roles",
            ],
        },
    },
]

_default_sqlite = f"sqlite:///{VAR_DIR / 'vmportal.sqlite3'}"
if "DATABASE_URL" not in os.environ:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": dj_database_url.config(default=_default_sqlite, conn_max_age=0),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the workers and the watcher all write. IMMEDIATE takes the write lock when
    # a transaction begins (a DEFERRED one that reads first fails with "database is locked" when
    # it then writes), the timeout waits for it, and WAL lets readers go on meanwhile.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "core:login"
LOGIN_REDIRECT_URL = "hosts:inventory"
LOGOUT_REDIRECT_URL = "core:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# In development serve straight from the app folders; in production run collectstatic.
WHITENOISE_USE_FINDERS = DEBUG

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = os.environ.get("DJANGO_SECURE_COOKIES", "") == "1"
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")

# channels_redis waits on BZPOPMIN for 5 s; redis-py 8 reads with a default 5 s socket timeout,
# which kills idle websocket consumers ("Timeout reading from ..."). Read longer than that.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}]},
    },
}

RQ_QUEUES = {
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 600},
    "migrations": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600},
}
# Workers run the apps' worker-start hooks (core.registry) before taking jobs: the migrations
# app reconciles migrations orphaned by a dead worker.
RQ = {"WORKER_CLASS": "core.worker.PortalWorker"}
# django-rq's dashboard (queues emptied, jobs deleted or requeued) would act unaudited inside
# Django's admin; the portal's own job pages are the way to see jobs, so it is not served.
RQ_SHOW_ADMIN_LINK = False
# Tests set this to run job functions in-process instead of through Redis.
VMPORTAL_JOBS_INLINE = False

VMPORTAL_INVENTORY_REFRESH_SECONDS = int(os.environ.get("VMPORTAL_INVENTORY_REFRESH_SECONDS", "300"))

# Migrations (migrations_app).
VMPORTAL_MAX_OUTGOING = int(os.environ.get("VMPORTAL_MAX_OUTGOING", "2"))
VMPORTAL_MAX_INCOMING = int(os.environ.get("VMPORTAL_MAX_INCOMING", "2"))
VMPORTAL_MIGRATION_MAX_SECONDS = int(os.environ.get("VMPORTAL_MIGRATION_MAX_SECONDS", str(4 * 3600)))
VMPORTAL_GUEST_HEARTBEAT_PROBE = os.environ.get("VMPORTAL_GUEST_HEARTBEAT_PROBE", "")
# How often a running migration's job statistics are read (and its heartbeat refreshed).
VMPORTAL_MIGRATION_SAMPLE_SECONDS = 0.25
# A running migration whose heartbeat is older than this lost its worker.
VMPORTAL_MIGRATION_STALE_SECONDS = 90
# How often `watch_hosts` looks for migrations to reconcile and slots to hand out.
VMPORTAL_MIGRATION_RECONCILE_SECONDS = 30

# Host maintenance (maintenance): the rolling evacuation queue advances the moment an item's
# migration or power job ends; this sweep settles and continues what a dead worker left behind.
VMPORTAL_EVACUATION_SWEEP_SECONDS = int(os.environ.get("VMPORTAL_EVACUATION_SWEEP_SECONDS", "10"))
# Figures for the plan's time estimate until this portal has measured live migrations of its own.
VMPORTAL_EVACUATION_DEFAULT_BANDWIDTH_BPS = 125_000_000  # 1 Gbit/s
VMPORTAL_EVACUATION_DEFAULT_OVERHEAD_S = 5.0

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "core": {"level": "INFO"},
        "hosts": {"level": "INFO"},
        "migrations_app": {"level": "INFO"},
    },
}
