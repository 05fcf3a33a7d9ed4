import json
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.actors import Actor
from hosts.adapters.errors import AdapterError
from hosts.access import presented_host_key
from hosts.choices import HostAuthMethodChoices
from hosts.models import Host
from hosts.services import HostConnection, host_connection_update, host_create, host_refresh_request

LAB_STATUS_TIMEOUT_S = 60


def lab_status() -> dict:
    """`python -m lab status --json`, run from the project directory."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "lab", "status", "--json"],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=LAB_STATUS_TIMEOUT_S,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        raise CommandError(f"`python -m lab status --json` failed: {exc.stderr.strip()}") from None
    except subprocess.TimeoutExpired:
        raise CommandError(f"`python -m lab status --json` did not answer within {LAB_STATUS_TIMEOUT_S} s") from None
    return json.loads(proc.stdout)


def onboard_lab_host(entry: dict, *, actor: Actor) -> tuple[Host, bool]:
    """Add (or update) one lab host, trusting the host key it presents now. Returns (host, created).

    Trusting without asking is acceptable only because the lab is ours, on this machine.
    """
    key = presented_host_key(entry["address"], int(entry.get("ssh_port", 22)))
    connection = HostConnection(
        address=entry["address"],
        ssh_port=int(entry.get("ssh_port", 22)),
        ssh_user=entry.get("ssh_user", "root"),
        auth_method=HostAuthMethodChoices.PRIVATE_KEY,
        private_key_pem=Path(entry["ssh_key"]).read_text(),
        libvirt_uri=entry.get("libvirt_uri", ""),
    )
    existing = Host.objects.filter(name__iexact=entry["name"]).first()
    if existing is None:
        host, _job = host_create(name=entry["name"], connection=connection, actor=actor, trusted_host_key=key)
        return host, True
    host = host_connection_update(host=existing, connection=connection, actor=actor, trusted_host_key=key)
    host_refresh_request(host=host, actor=actor)
    return host, False


class Command(BaseCommand):
    help = "Add every host of the running lab (python -m lab up) to the inventory, trusting its host key."

    def add_arguments(self, parser):
        parser.add_argument(
            "--status-file", help="Read the lab status JSON from this file ('-' for stdin) instead of running the lab CLI."
        )

    def handle(self, *args, **options):
        if options["status_file"] == "-":
            status = json.load(sys.stdin)
        elif options["status_file"]:
            status = json.loads(Path(options["status_file"]).read_text())
        else:
            status = lab_status()
        entries = status.get("hosts", [])
        if not entries:
            raise CommandError("The lab has no hosts. Start it with `python -m lab up`.")
        failures = 0
        for entry in entries:
            try:
                host, created = onboard_lab_host(entry, actor=Actor.cli())
            except AdapterError as exc:
                failures += 1
                self.stderr.write(f"{entry.get('name')}: {exc.message} ({exc.hint})")
                continue
            except (OSError, KeyError, ValidationError) as exc:
                failures += 1
                self.stderr.write(f"{entry.get('name')}: bad lab entry: {exc}")
                continue
            verb = "added" if created else "updated"
            self.stdout.write(f"{host.name}: {verb}, host key {host.host_key_fingerprint}, {host.effective_libvirt_uri}")
        if failures:
            raise CommandError(f"{failures} lab host(s) could not be onboarded.")
