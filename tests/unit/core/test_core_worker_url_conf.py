"""Work horses and the web process start with the URL conf loaded: the first reverse() of a
process (a lease naming its owner's page, at a confirm) imports nothing any more."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[3]

PROBE = """
import json, sys
import django
django.setup()
from django.urls import reverse
warm = sys.argv[1] == "warm"
if warm:
    from core.worker import load_url_conf
    load_url_conf()
before = set(sys.modules)
reverse("migrations_app:migration_detail", args=[1])
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def imported_by_first_reverse(mode: str) -> list[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "vmportal.test_settings", "PYTHONPATH": str(PROJECT)}
    done = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_first_reverse_of_a_process_imports_every_app_s_views_unless_the_url_conf_was_loaded():
    cold = imported_by_first_reverse("cold")
    assert "vmportal.urls" in cold and "calendar_app.views" in cold  # what a horse paid on its first job
    assert imported_by_first_reverse("warm") == []


def test_the_worker_loads_the_url_conf_before_forking_horses(monkeypatch):
    import rq

    import core.worker
    from core.worker import PortalWorker

    order = []
    monkeypatch.setattr(core.worker, "autodiscover_modules", lambda name: order.append(name))
    monkeypatch.setattr(core.worker, "load_url_conf", lambda: order.append("urls"))
    monkeypatch.setattr(core.worker, "run_worker_start_hooks", lambda: order.append("hooks"))
    monkeypatch.setattr(rq.Worker, "work", lambda self, *a, **k: order.append("work"))
    object.__new__(PortalWorker).work(burst=True)
    assert order == ["jobs", "urls", "hooks", "work"]
