"""VMPortal settings, read from the environment.

Environment variables (all optional in development, see each one below):
  DJANGO_DEBUG=1            turn on debug mode (off by default)
  DJANGO_SECRET_KEY         else read from var/secret_key (written by `make run`); required
                            unless DJANGO_DEBUG=1
  DJANGO_ALLOWED_HOSTS      comma-separated, default "localhost,127.0.0.1,[::1]"
  DJANGO_CSRF_TRUSTED_ORIGINS  comma-separated origins, e.g. "https://portal.example.org"
  DJANGO_STATIC_ROOT        where collectstatic writes, default <repo>/staticfiles
  DJANGO_SECURE_COOKIES=1   session/CSRF cookies only over HTTPS (implied by DJANGO_HTTPS=1)
  DJANGO_HTTPS=1            served over TLS: HSTS (DJANGO_HSTS_SECONDS, default one year, with
                            subdomains; DJANGO_HSTS_PRELOAD=0 drops preload), secure cookies, HTTP
                            redirected to HTTPS, and X-Forwarded-Proto: https from the reverse
                            proxy trusted (the proxy must set it)
  VMPORTAL_LOGIN_FAILURE_LIMIT  failed logins for one user name or from one address before both
                            are locked out, default 5
  VMPORTAL_LOGIN_LOCKOUT_MINUTES  how long a lockout lasts, default 15
  VMPORTAL_HTTP_PORT        port the ASGI server listens on, default 8000 (`make run`)
  VMPORTAL_SITE_ORIGINS     comma-separated exact origins (scheme://host:port) websockets may
                            come from; default: each allowed host on VMPORTAL_HTTP_PORT (https
                            with DJANGO_HTTPS=1) and DJANGO_CSRF_TRUSTED_ORIGINS
  DATABASE_URL              default: SQLite file var/vmportal.sqlite3
  REDIS_URL                 default redis://127.0.0.1:6390/0 (the private redis of `make run`)
  VMPORTAL_SECRETS_KEY      Fernet key encrypting SSH keys/passwords at rest, or several separated
                            by commas, newest first, during a rotation (`manage.py secrets_rotate`);
                            else read from var/secrets.key (one key a line, written by `make run`);
                            required unless DJANGO_DEBUG=1. Nothing but `make run` creates a key.
  VMPORTAL_AUDIT_KEY        key signing the audit trail's checkpoints (HMAC-SHA256), different from
                            both keys above; else read from var/audit.key (written by `make run`);
                            required unless DJANGO_DEBUG=1
  VMPORTAL_AUDIT_CHECKPOINT_MINUTES  at most this often a periodic checkpoint signs the chain's
                            head (and on every export), default 10
  VMPORTAL_AUDIT_CHECKPOINT_FILE  also append each checkpoint to this file (one JSON line), outside
                            the database; unset by default
  VMPORTAL_CHANNEL_CAPACITY  live events one websocket may have waiting in the channel layer
                            before more to it are dropped, default 1000
  VMPORTAL_WS_RECHECK_SECONDS  an open websocket checks its session and role again this often
                            (at once on logout or a role change), default 5
  VMPORTAL_INVENTORY_REFRESH_SECONDS  period of the full inventory refresh (queued by
                            `manage.py watch_hosts`), default 300
  VMPORTAL_HOST_PROBE_SECONDS  the periodic refresh reads a host's os-release and where its
                            disks live (one SSH command) at most this often, and whenever a disk
                            path is new; a Refresh someone asks for always does; default 1800
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
from datetime import timedelta
from pathlib import Path

import dj_database_url

from . import keys, origins

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"

SECRET_KEY = keys.secret_key(VAR_DIR, debug=DEBUG)
# Newest first, comma-separated: encryption uses the first, decryption tries each (core.encryption).
VMPORTAL_SECRETS_KEY = keys.secrets_keys(VAR_DIR, debug=DEBUG)

VMPORTAL_AUDIT_KEY = keys.audit_key(VAR_DIR, debug=DEBUG, others=(SECRET_KEY, *VMPORTAL_SECRETS_KEY.split(",")))
VMPORTAL_AUDIT_CHECKPOINT_MINUTES = int(os.environ.get("VMPORTAL_AUDIT_CHECKPOINT_MINUTES", "10"))
VMPORTAL_AUDIT_CHECKPOINT_FILE = os.environ.get("VMPORTAL_AUDIT_CHECKPOINT_FILE", "")

# Served over TLS (directly or behind the documented reverse proxy): HSTS, secure cookies, redirect.
HTTPS = os.environ.get("DJANGO_HTTPS", "") == "1"

ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
# Exact scheme://host:port origins a websocket may come from (vmportal/origins.py). By default each
# allowed host at the port the ASGI server listens on (VMPORTAL_HTTP_PORT, 8000 for `make run`),
# plus the CSRF trusted origins.
VMPORTAL_HTTP_PORT = int(os.environ.get("VMPORTAL_HTTP_PORT", "8000"))
VMPORTAL_SITE_ORIGINS = _env_list("VMPORTAL_SITE_ORIGINS", "") or origins.default_site_origins(
    allowed_hosts=ALLOWED_HOSTS, port=VMPORTAL_HTTP_PORT, https=HTTPS, trusted=CSRF_TRUSTED_ORIGINS
)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "channels",
    "django_rq",
    "django_filters",
    "core",
    "hosts",
    "migrations_app",
    "storage",
    "maintenance",
    "calendar_app",
    "fleet",
    "guest_state",
    "recovery",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "calendar_app.middleware.UserZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.middleware.RequestIdMiddleware",
    "core.middleware.AuditRefusedMiddleware",
    "core.middleware.ContentSecurityPolicyMiddleware",
    # Last, as django-axes asks: turns a locked-out login into the login page saying so.
    "axes.middleware.AxesMiddleware",
]

# Login throttling (django-axes, core/login_throttle.py): after AXES_FAILURE_LIMIT failed logins for
# one user name, or from one address, both are refused for AXES_COOLOFF_TIME or until an admin
# runs `manage.py axes_reset_username NAME` / `axes_reset_ip ADDRESS` / `axes_reset`.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("VMPORTAL_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("VMPORTAL_LOGIN_LOCKOUT_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own, not the pair
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "core.login_throttle.client_ip"
AXES_USERNAME_CALLABLE = "core.login_throttle.client_username"
AXES_LOCKOUT_CALLABLE = "core.login_throttle.lockout_response"

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
# Every SQLite database of the portal (a test's own file too) is opened with these. In WAL mode
# synchronous=NORMAL syncs the log at checkpoints, not at every commit: the database stays
# consistent through a crash or power loss, and only the last commits before a power loss may be
# lost (a process crash loses nothing). FULL (SQLite's default) paid an fsync per commit, which was
# most of what a refresh's load point cost (bench/load_record.py).
SQLITE_OPTIONS = {"transaction_mode": "IMMEDIATE", "timeout": 20,
                  "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL"}
DATABASES = {
    "default": dj_database_url.config(default=_default_sqlite, conn_max_age=0),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the workers and the watcher all write. IMMEDIATE takes the write lock when
    # a transaction begins (a DEFERRED one that reads first fails with "database is locked" when
    # it then writes), the timeout waits for it, and WAL lets readers go on meanwhile.
    DATABASES["default"].setdefault("OPTIONS", {}).update(SQLITE_OPTIONS)
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
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS or os.environ.get("DJANGO_SECURE_COOKIES", "") == "1"
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", str(365 * 24 * 3600)))
    # The portal's own name and the names below it: nothing under a portal's name serves plain HTTP.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = os.environ.get("DJANGO_HSTS_PRELOAD", "1") == "1"
    # The reverse proxy terminates TLS and must set (and overwrite) X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6390/0")

# channels_redis waits on BZPOPMIN for 5 s; redis-py 8 reads with a default 5 s socket timeout,
# which kills idle websocket consumers ("Timeout reading from ..."). Read longer than that.
# Fan-out, set deliberately (channels_redis defaults: capacity 100, group_expiry one day):
# - capacity: messages one socket may have waiting before further sends to it are dropped
#   ("over capacity in group inventory"). A page busy for a second under 50 events/s needs more
#   than 100; 1,000 bounds what a stuck socket holds in Redis.
# - expiry: a message waiting longer than this is dropped; a page that fell that far behind asks
#   for the current state on reconnect anyway.
# - group_expiry: a socket that vanished without leaving its groups (a killed daphne) stops being
#   sent to after this (a day, channels_redis's own default, kept on purpose: an evacuation page
#   follows migration groups for hours); the groups every consumer joins on connect are joined
#   again every hour (core.consumers.GROUP_RENEW_S), so a page left open for days still hears.
VMPORTAL_CHANNEL_CAPACITY = int(os.environ.get("VMPORTAL_CHANNEL_CAPACITY", "1000"))
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30}],
            "capacity": VMPORTAL_CHANNEL_CAPACITY,
            "expiry": 60,
            "group_expiry": 86400,
        },
    },
}

# An open websocket checks its session and role again this often (and at once on logout or a role
# change), closing when either is gone (core.socket_access). Each check is a few queries on the
# server's one thread for sync code: at 500 open sockets per daphne process, 5 s is 100 checks a
# second (bench/live_fanout.py --recheck shows what it costs).
VMPORTAL_WS_RECHECK_SECONDS = min(max(float(os.environ.get("VMPORTAL_WS_RECHECK_SECONDS", "5")), 0.05), 3600.0)

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
# Where `make run`'s supervisor (scripts/supervisor.py) writes what runs; the health page reads it.
VMPORTAL_SUPERVISOR_STATE = os.environ.get("VMPORTAL_SUPERVISOR_STATE", str(VAR_DIR / "supervisor.json"))

VMPORTAL_INVENTORY_REFRESH_SECONDS = int(os.environ.get("VMPORTAL_INVENTORY_REFRESH_SECONDS", "300"))
# The periodic refresh asks a host for its os-release and disk placement at most this often
# (and whenever a disk path is new); a refresh someone asks for always does (hosts.probe_rules).
VMPORTAL_HOST_PROBE_SECONDS = min(max(int(os.environ.get("VMPORTAL_HOST_PROBE_SECONDS", "1800")), 0), 7 * 86400)

# Migrations (migrations_app).
VMPORTAL_MAX_OUTGOING = int(os.environ.get("VMPORTAL_MAX_OUTGOING", "2"))
VMPORTAL_MAX_INCOMING = int(os.environ.get("VMPORTAL_MAX_INCOMING", "2"))
VMPORTAL_MIGRATION_MAX_SECONDS = int(os.environ.get("VMPORTAL_MIGRATION_MAX_SECONDS", str(4 * 3600)))
VMPORTAL_GUEST_HEARTBEAT_PROBE = os.environ.get("VMPORTAL_GUEST_HEARTBEAT_PROBE", "")
# A cold migration between two hosts streams each disk straight from the source's ssh to the
# destination's sshd with a one-time key (hosts.adapters.direct_copy); "0" relays every byte through
# the portal instead (slower: paramiko encrypts in Python). It relays by itself when the direct way fails.
VMPORTAL_COLD_COPY_DIRECT = os.environ.get("VMPORTAL_COLD_COPY_DIRECT", "1") != "0"
# How often a running migration's job statistics are read (and its heartbeat refreshed).
VMPORTAL_MIGRATION_SAMPLE_SECONDS = 0.25
# A running migration whose heartbeat is older than this lost its worker.
VMPORTAL_MIGRATION_STALE_SECONDS = 90
# How often `watch_hosts` looks for migrations to reconcile and slots to hand out (a job whose
# worker died is handed over at once, core.signals.job_lost; this sweep catches the rest).
VMPORTAL_MIGRATION_RECONCILE_SECONDS = 10
# How often `watch_hosts` settles NFS share set-ups whose worker died (storage.reconciler).
VMPORTAL_STORAGE_RECONCILE_SECONDS = 10
# How often `watch_hosts` settles saves and restores whose worker died (guest_state.reconciler), and
# after how long one whose host still does not answer says it needs an admin (the guest stays held).
VMPORTAL_GUEST_STATE_RECONCILE_SECONDS = 10
VMPORTAL_GUEST_STATE_ATTENTION_SECONDS = int(os.environ.get("VMPORTAL_GUEST_STATE_ATTENTION_SECONDS", "300"))
# How often `watch_hosts` compares snapshot records with libvirt's lists (a guest's records are
# asked about once they were last compared longer ago than this; 60 s to a day).
VMPORTAL_GUEST_SNAPSHOT_RECONCILE_SECONDS = min(max(
    int(os.environ.get("VMPORTAL_GUEST_SNAPSHOT_RECONCILE_SECONDS", "300")), 60), 86400)

# Host maintenance (maintenance): the rolling evacuation queue advances the moment an item's
# migration or power job ends; this sweep settles and continues what a dead worker left behind.
VMPORTAL_EVACUATION_SWEEP_SECONDS = int(os.environ.get("VMPORTAL_EVACUATION_SWEEP_SECONDS", "10"))
# Figures for the plan's time estimate until this portal has measured live migrations of its own.
VMPORTAL_EVACUATION_DEFAULT_BANDWIDTH_BPS = 125_000_000  # 1 Gbit/s
VMPORTAL_EVACUATION_DEFAULT_OVERHEAD_S = 5.0
# Balance and consolidation (fleet/): memory kept back for each host itself; a budget for guests
# of every host instead (MiB, 0 = its memory minus the reserve; the lab sets a small one).
VMPORTAL_FLEET_HOST_RESERVE_MIB = int(os.environ.get("VMPORTAL_FLEET_HOST_RESERVE_MIB", "1024"))
VMPORTAL_FLEET_MEMORY_BUDGET_MIB = int(os.environ.get("VMPORTAL_FLEET_MEMORY_BUDGET_MIB", "0"))
VMPORTAL_FLEET_THRESHOLD_POINTS = float(os.environ.get("VMPORTAL_FLEET_THRESHOLD_POINTS", "20"))
VMPORTAL_FLEET_MARGIN_POINTS = float(os.environ.get("VMPORTAL_FLEET_MARGIN_POINTS", "5"))
VMPORTAL_FLEET_COOLDOWN_HOURS = float(os.environ.get("VMPORTAL_FLEET_COOLDOWN_HOURS", "24"))
# vCPUs a host may run per host CPU, unless its own budget says otherwise.
VMPORTAL_FLEET_VCPU_RATIO = float(os.environ.get("VMPORTAL_FLEET_VCPU_RATIO", "4"))

# Maintenance calendar (calendar_app): the tick in `watch_hosts` runs the windows' steps.
VMPORTAL_CALENDAR_TICK_SECONDS = float(os.environ.get("VMPORTAL_CALENDAR_TICK_SECONDS", "5"))
VMPORTAL_CALENDAR_CHECK_MINUTES = int(os.environ.get("VMPORTAL_CALENDAR_CHECK_MINUTES", "30"))  # dry run before start
VMPORTAL_CALENDAR_LATE_START_SECONDS = 60  # a start later than this after its time says it started late
VMPORTAL_CALENDAR_CONCURRENCY = 2  # guests moved at a time by a window's evacuation

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
