from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from django.contrib.auth import get_user_model

from core.actors import Actor
from core.audit import audit_record_now
from core.choices import AuditResultChoices, RoleChoices
from core.errors import PortalError
from hosts import jobs, lifecycle_services
from hosts.choices import HostAuthMethodChoices, HostChangeStatusChoices
from hosts.models import Host, HostChange
from hosts.command_access import add_as_argument, command_actor
from hosts.services import HostConnection
from hosts.validators import validate_address, validate_libvirt_uri, validate_port, validate_ssh_user

from .host_add import _read_private_key


def find_host(name: str) -> Host:
    """A host in the inventory (in service or decommissioned) by name, else a clear error."""
    host = Host.all_objects.not_removed().filter(name__iexact=name).first()
    if host is None:
        known = ", ".join(Host.all_objects.not_removed().values_list("name", flat=True)) or "none"
        raise CommandError(f"No host named {name!r}. Known hosts: {known}.")
    return host


class Command(BaseCommand):
    help = (
        "Change how the portal reaches a host. Prints the SSH host key presented at the new settings; "
        "without --trust-host-key it stops there. With it, logs in with the new settings and saves them "
        "only if that works."
    )

    def add_arguments(self, parser):
        parser.add_argument("host")
        parser.add_argument("--address")
        parser.add_argument("--ssh-port", type=int)
        parser.add_argument("--ssh-user")
        parser.add_argument("--ssh-key", help="A new private key file to log in with.")
        parser.add_argument("--portal-key", action="store_true", help="Log in with the portal's own key.")
        parser.add_argument("--libvirt-uri")
        parser.add_argument("--trust-host-key", action="store_true", help="Pin the host key this run reads.")
        add_as_argument(parser)

    def handle(self, *args, **options):
        host = find_host(options["host"])
        actor = command_actor(options, [host], RoleChoices.ADMIN)
        try:
            for option, validate in (("address", validate_address), ("ssh_port", validate_port),
                                     ("ssh_user", validate_ssh_user), ("libvirt_uri", validate_libvirt_uri)):
                if options[option]:
                    validate(options[option])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        pem = _read_private_key(options["ssh_key"]) if options["ssh_key"] else None
        method = (HostAuthMethodChoices.PRIVATE_KEY if pem else HostAuthMethodChoices.PORTAL_KEY
                  if options["portal_key"] else HostAuthMethodChoices(host.auth_method))
        connection = HostConnection(
            address=options["address"] or host.address, ssh_port=options["ssh_port"] or host.ssh_port,
            ssh_user=options["ssh_user"] or host.ssh_user, auth_method=method, private_key_pem=pem,
            libvirt_uri=host.libvirt_uri if options["libvirt_uri"] is None else options["libvirt_uri"],
        )
        try:
            requested = lifecycle_services.host_change_request(
                host=host, connection=connection, actor=actor, enqueue=False
            )
        except PortalError as exc:
            raise CommandError(f"{exc.message} {exc.hint}") from None
        if requested is None:
            self.stdout.write("Nothing to change.")
            return
        change, job = requested
        jobs.host_change_read_key_job(job.pk, change.pk)
        change = self._settled(change, "reading the host key")
        self.stdout.write(
            f"{connection.address}:{connection.ssh_port} presents {change.presented_host_key_fingerprint}"
            + (" (the key trusted now)" if change.presented_host_key == host.host_key else " (a different key)")
        )
        if not options["trust_host_key"]:
            lifecycle_services.host_change_cancel(change=change, actor=actor)
            raise CommandError(
                "Nothing changed: compare this fingerprint with the host's console "
                "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then re-run with --trust-host-key."
            )
        check = lifecycle_services.host_change_confirm(
            change=change, fingerprint=change.presented_host_key_fingerprint, actor=actor, enqueue=False
        )
        jobs.host_change_check_job(check.pk, change.pk)
        change = self._settled(change, "logging in with the new settings")
        if change.status != HostChangeStatusChoices.APPLIED:
            raise CommandError(f"Nothing changed: {change.error} {change.hint}")
        self.stdout.write(self.style.SUCCESS(f"Saved the new settings of {host.name}; inventory refresh queued."))

    def _settled(self, change: HostChange, doing: str) -> HostChange:
        change.refresh_from_db()
        if change.status == HostChangeStatusChoices.FAILED:
            raise CommandError(f"Nothing changed ({doing} failed): {change.error}\n{change.hint}")
        return change
