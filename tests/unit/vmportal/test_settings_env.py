"""Settings come from the environment; production refuses to start without its secrets."""

import os
import stat
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[3]

PRINT_SETTINGS = (
    "import json; from django.conf import settings as s; "
    "print(json.dumps({'debug': s.DEBUG, 'db': s.DATABASES['default']['ENGINE'], "
    "'db_name': str(s.DATABASES['default']['NAME']), 'redis': s.REDIS_URL, "
    "'layer': s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0]['address'], "
    "'layer_timeout': s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0]['socket_timeout'], "
    "'queues': {k: v['URL'] for k, v in s.RQ_QUEUES.items()}, 'hosts': s.ALLOWED_HOSTS, "
    "'secrets_key': s.VMPORTAL_SECRETS_KEY}))"
)


def load_settings(env: dict, cwd: Path = PROJECT):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VMPORTAL_", "DATABASE_URL", "REDIS_URL"))}
    clean.update(env, DJANGO_SETTINGS_MODULE="vmportal.settings", PYTHONPATH=str(PROJECT))
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {PRINT_SETTINGS}"],
        env=clean, cwd=cwd, capture_output=True, text=True, timeout=60,
    )


def test_production_requires_secret_key():
    proc = load_settings({"DATABASE_URL": "sqlite:///:memory:"})
    assert proc.returncode != 0 and "DJANGO_SECRET_KEY" in proc.stderr


def test_production_requires_secrets_key():
    proc = load_settings({"DJANGO_SECRET_KEY": "k", "DATABASE_URL": "sqlite:///:memory:"})
    assert proc.returncode != 0 and "VMPORTAL_SECRETS_KEY" in proc.stderr


def test_production_requires_an_audit_key_apart_from_the_others():
    base = {"DJANGO_SECRET_KEY": "k", "VMPORTAL_SECRETS_KEY": "z6JPtstxHfaMV7NFepwL8yGIC5bwXXxq9zYOZ4x5a9c=",
            "DATABASE_URL": "sqlite:///:memory:"}
    proc = load_settings(base)
    assert proc.returncode != 0 and "VMPORTAL_AUDIT_KEY" in proc.stderr
    proc = load_settings({**base, "VMPORTAL_AUDIT_KEY": "k"})
    assert proc.returncode != 0 and "must differ" in proc.stderr


def test_environment_drives_database_redis_and_hosts():
    import json

    proc = load_settings({
        "DJANGO_SECRET_KEY": "k",
        "VMPORTAL_SECRETS_KEY": "z6JPtstxHfaMV7NFepwL8yGIC5bwXXxq9zYOZ4x5a9c=",
        "VMPORTAL_AUDIT_KEY": "audit-k",
        "DATABASE_URL": "postgres://portal:pw@db.example:5432/vmportal",
        "REDIS_URL": "redis://127.0.0.1:7777/3",
        "DJANGO_ALLOWED_HOSTS": "portal.example, 10.0.0.5",
    })
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["debug"] is False
    assert s["db"] == "django.db.backends.postgresql" and s["db_name"] == "vmportal"
    assert s["layer"] == "redis://127.0.0.1:7777/3"
    # Longer than channels_redis' 5 s blocking read, or idle websockets die with redis-py 8.
    from channels_redis.core import RedisChannelLayer

    assert s["layer_timeout"] > RedisChannelLayer.brpop_timeout
    assert s["queues"] == {"default": "redis://127.0.0.1:7777/3", "migrations": "redis://127.0.0.1:7777/3"}
    assert s["hosts"] == ["portal.example", "10.0.0.5"]


def test_debug_defaults_sqlite_in_var_and_generates_secrets_key_once(tmp_path):
    import json
    import shutil

    # Run from a copy of the settings module so the test never touches the real var/.
    project = tmp_path / "proj"
    (project / "vmportal").mkdir(parents=True)
    shutil.copy(PROJECT / "vmportal" / "settings.py", project / "vmportal" / "settings.py")
    (project / "vmportal" / "__init__.py").write_text("")
    env = {"DJANGO_DEBUG": "1"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VMPORTAL_", "DATABASE_URL", "REDIS_URL"))}
    clean.update(env, DJANGO_SETTINGS_MODULE="vmportal.settings", PYTHONPATH=f"{project}")
    code = (
        "import json; import vmportal.settings as s; "
        "print(json.dumps({'db': str(s.DATABASES['default']['NAME']), 'key': s.VMPORTAL_SECRETS_KEY, 'audit': s.VMPORTAL_AUDIT_KEY, 'redis': s.REDIS_URL, 'debug': s.DEBUG}))"
    )
    first = subprocess.run([sys.executable, "-c", code], env=clean, cwd=project, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([sys.executable, "-c", code], env=clean, cwd=project, capture_output=True, text=True, timeout=60)
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    key_file = project / "var" / "secrets.key"
    assert a["debug"] is True and a["redis"] == "redis://127.0.0.1:6390/0"
    assert a["db"] == str(project / "var" / "vmportal.sqlite3")
    assert a["key"] == b["key"] == key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    audit_file = project / "var" / "audit.key"
    assert a["audit"] == b["audit"] == audit_file.read_text().strip() != a["key"]
    assert stat.S_IMODE(audit_file.stat().st_mode) == 0o600
