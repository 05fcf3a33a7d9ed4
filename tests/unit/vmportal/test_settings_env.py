"""Settings come from the environment; production refuses to start without its secrets."""

import os
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


def settings_copy(tmp_path: Path) -> Path:
    """A project with only the vmportal package, so a test's var/ is its own, never the real one."""
    import shutil

    project = tmp_path / "proj"
    shutil.copytree(PROJECT / "vmportal", project / "vmportal", ignore=shutil.ignore_patterns("__pycache__"))
    return project


def run_in_copy(project: Path, env: dict, code: str):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VMPORTAL_", "DATABASE_URL", "REDIS_URL"))}
    clean.update(env, DJANGO_SETTINGS_MODULE="vmportal.settings", PYTHONPATH=str(project))
    return subprocess.run([sys.executable, "-c", code], env=clean, cwd=project, capture_output=True, text=True, timeout=60)


KEYS = "import json; import vmportal.settings as s; print(json.dumps({'secret': s.SECRET_KEY, 'keys': s.VMPORTAL_SECRETS_KEY}))"
FERNET_A = "z6JPtstxHfaMV7NFepwL8yGIC5bwXXxq9zYOZ4x5a9c="
FERNET_B = "2Jv4y4m3nq8h8kq7P9C3y0T2q1E5k6L7m8N9o0P1q2Q="


def test_production_requires_secret_key(tmp_path):
    proc = run_in_copy(settings_copy(tmp_path), {"DATABASE_URL": "sqlite:///:memory:"}, KEYS)
    assert proc.returncode != 0 and "DJANGO_SECRET_KEY" in proc.stderr


def test_production_requires_secrets_key(tmp_path):
    proc = run_in_copy(settings_copy(tmp_path), {"DJANGO_SECRET_KEY": "k", "DATABASE_URL": "sqlite:///:memory:"}, KEYS)
    assert proc.returncode != 0 and "VMPORTAL_SECRETS_KEY" in proc.stderr


def test_keys_fall_back_to_the_files_make_run_wrote(tmp_path):
    import json

    project = settings_copy(tmp_path)
    (project / "var").mkdir()
    (project / "var" / "secret_key").write_text("from-the-file\n")
    (project / "var" / "secrets.key").write_text(f"{FERNET_A}\n{FERNET_B}\n")  # a rotation: new key first
    (project / "var" / "audit.key").write_text("audit-from-the-file\n")
    proc = run_in_copy(project, {"DATABASE_URL": "sqlite:///:memory:"}, KEYS)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"secret": "from-the-file", "keys": f"{FERNET_A},{FERNET_B}"}
    # The environment wins over the files.
    proc = run_in_copy(project, {"DATABASE_URL": "sqlite:///:memory:", "DJANGO_SECRET_KEY": "env",
                                 "VMPORTAL_SECRETS_KEY": FERNET_B}, KEYS)
    assert json.loads(proc.stdout) == {"secret": "env", "keys": FERNET_B}


def test_manage_py_says_in_one_line_what_to_set_when_a_key_is_missing(tmp_path):
    import shutil

    project = settings_copy(tmp_path)
    shutil.copy(PROJECT / "manage.py", project / "manage.py")
    for env, name in (({}, "DJANGO_SECRET_KEY"), ({"DJANGO_SECRET_KEY": "k"}, "VMPORTAL_SECRETS_KEY"),
                      ({"DJANGO_SECRET_KEY": "k", "VMPORTAL_SECRETS_KEY": "not-a-key"}, "not a Fernet key"),
                      ({"DJANGO_SECRET_KEY": "k", "VMPORTAL_SECRETS_KEY": FERNET_A}, "VMPORTAL_AUDIT_KEY")):
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VMPORTAL_", "DATABASE_URL"))}
        clean.update(env, DATABASE_URL="sqlite:///:memory:", PYTHONPATH=str(project))
        proc = subprocess.run([sys.executable, "manage.py", "check"], env=clean, cwd=project, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 1
        assert name in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (project / "var" / "secret_key").exists() and not (project / "var" / "secrets.key").exists()


def test_https_mode_turns_on_hsts_secure_cookies_redirect_and_proxy_header_and_check_deploy_is_clean():
    import secrets

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VMPORTAL_", "DATABASE_URL", "REDIS_URL"))}
    env.update(DJANGO_HTTPS="1", DJANGO_SECRET_KEY=secrets.token_urlsafe(50), VMPORTAL_SECRETS_KEY=FERNET_A,
               VMPORTAL_AUDIT_KEY=secrets.token_urlsafe(48),
               DATABASE_URL="sqlite:///:memory:", DJANGO_ALLOWED_HOSTS="portal.example", PYTHONPATH=str(PROJECT))
    proc = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          env=env, cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout
    code = ("import json; import django; django.setup(); from django.conf import settings as s; "
            "print(json.dumps([s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
            "s.SECURE_SSL_REDIRECT, list(s.SECURE_PROXY_SSL_HEADER), s.VMPORTAL_SITE_ORIGINS]))")
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "DJANGO_SETTINGS_MODULE": "vmportal.settings"},
                          cwd=PROJECT, capture_output=True, text=True, timeout=60)
    import json

    hsts, session_secure, csrf_secure, redirect, header, origins = json.loads(proc.stdout)
    assert hsts >= 31536000 and session_secure and csrf_secure and redirect
    assert header == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert origins == ["https://portal.example:443"]
    # Without it, check --deploy names what is missing.
    plain = {k: v for k, v in env.items() if k != "DJANGO_HTTPS"}
    proc = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          env=plain, cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "SECURE_HSTS_SECONDS" in proc.stderr + proc.stdout


def test_production_requires_an_audit_key_apart_from_the_others(tmp_path):
    # A copy of the project, so an audit key `make run` left in the real var/ does not count.
    project = settings_copy(tmp_path)
    base = {"DJANGO_SECRET_KEY": "k", "VMPORTAL_SECRETS_KEY": FERNET_A, "DATABASE_URL": "sqlite:///:memory:"}
    proc = run_in_copy(project, base, KEYS)
    assert proc.returncode != 0 and "VMPORTAL_AUDIT_KEY" in proc.stderr
    proc = run_in_copy(project, {**base, "VMPORTAL_AUDIT_KEY": "k"}, KEYS)
    assert proc.returncode != 0 and "must differ" in proc.stderr
    proc = run_in_copy(project, {**base, "VMPORTAL_AUDIT_KEY": FERNET_A}, KEYS)
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


def test_debug_defaults_sqlite_in_var_and_never_writes_a_key(tmp_path):
    import json

    project = settings_copy(tmp_path)
    code = (
        "import json; import vmportal.settings as s; "
        "print(json.dumps({'db': str(s.DATABASES['default']['NAME']), 'key': s.VMPORTAL_SECRETS_KEY, 'audit': s.VMPORTAL_AUDIT_KEY, 'redis': s.REDIS_URL, 'debug': s.DEBUG}))"
    )
    proc = run_in_copy(project, {"DJANGO_DEBUG": "1"}, code)
    assert proc.returncode == 0, proc.stderr
    a = json.loads(proc.stdout)
    assert a["debug"] is True and a["redis"] == "redis://127.0.0.1:6390/0"
    assert a["db"] == str(project / "var" / "vmportal.sqlite3")
    assert a["key"] and a["audit"] and a["audit"] != a["key"]  # the development keys
    # Only `make run` creates keys.
    assert not (project / "var" / "secrets.key").exists() and not (project / "var" / "secret_key").exists()
    assert not (project / "var" / "audit.key").exists()
