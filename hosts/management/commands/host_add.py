from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from core.actors import Actor
from hosts.adapters.errors import AdapterError
from hosts.access import presented_host_key
from hosts.adapters.ssh import load_private_key
from hosts.choices import HostAuthMethodChoices
from hosts.forms import MAX_PRIVATE_KEY_BYTES
from hosts.services import HostConnection, ServiceRefused, host_create
from hosts.validators import (
    validate_address,
    validate_host_name,
    validate_libvirt_uri,
    validate_port,
    validate_ssh_user,
)


class Command(BaseCommand):
    help = (
        "Add a host. Prints the SSH host key fingerprint; without --trust-host-key it stops there "
        "so you can compare it with the host's console, then re-run with the flag."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--address", required=True)
        parser.add_argument("--ssh-port", type=int, default=22)
        parser.add_argument("--ssh-user", default="root")
        parser.add_argument("--ssh-key", help="Private key file to log in with (default: the portal's own key).")
        parser.add_argument("--libvirt-uri", default="")
        parser.add_argument("--trust-host-key", action="store_true", help="Pin the host key this run reads.")

    def handle(self, *args, **options):
        name, address = options["name"], options["address"]
        try:
            validate_host_name(name)
            validate_address(address)
            validate_port(options["ssh_port"])
            validate_ssh_user(options["ssh_user"])
            if options["libvirt_uri"]:
                validate_libvirt_uri(options["libvirt_uri"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None

        private_key_pem = _read_private_key(options["ssh_key"]) if options["ssh_key"] else None

        try:
            key = presented_host_key(address, options["ssh_port"])
        except AdapterError as exc:
            raise CommandError(f"{exc.message}\n{exc.hint}") from None
        self.stdout.write(f"{name} ({address}:{options['ssh_port']}) presents {key.key_type} {key.fingerprint}")
        if not options["trust_host_key"]:
            raise CommandError(
                "Not added: compare this fingerprint with the host's console "
                "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then re-run with --trust-host-key."
            )

        connection = HostConnection(
            address=address,
            ssh_port=options["ssh_port"],
            ssh_user=options["ssh_user"],
            auth_method=HostAuthMethodChoices.PRIVATE_KEY if private_key_pem else HostAuthMethodChoices.PORTAL_KEY,
            private_key_pem=private_key_pem,
            libvirt_uri=options["libvirt_uri"],
        )
        try:
            host, job = host_create(name=name, connection=connection, actor=Actor.cli(), trusted_host_key=key)
        except ServiceRefused as exc:
            raise CommandError(f"{exc.message} {exc.hint}") from None
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(self.style.SUCCESS(f"Added {host.name}, trusting host key {key.fingerprint}."))
        self.stdout.write(f"Inventory refresh queued as job #{job.pk}.")


def _read_private_key(path: str) -> str:
    """The key file's text, read no further than the form's cap (a device like /dev/zero never ends)."""
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_PRIVATE_KEY_BYTES + 1)
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_PRIVATE_KEY_BYTES:
        raise CommandError(
            f"{path} is larger than {MAX_PRIVATE_KEY_BYTES // 1024} KiB: that is not a private key file."
        )
    try:
        pem = data.decode("ascii")
    except UnicodeDecodeError:
        raise CommandError(f"{path} is not a text private key.") from None
    try:
        load_private_key(pem)
    except AdapterError as exc:
        raise CommandError(f"{exc.message} {exc.hint}") from None
    return pem
