from django.core.management.base import BaseCommand, CommandError

from core.actors import Actor
from core.audit_retention import audit_retention_apply


class Command(BaseCommand):
    help = ("Delete audit events older than N days: the one sanctioned delete. Signs the chain's head "
            "into a checkpoint first and records what it removed as an audit event.")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, required=True, help="keep this many days (at least 1)")

    def handle(self, *args, **options):
        if options["days"] < 1:
            raise CommandError("--days must be at least 1.")
        outcome = audit_retention_apply(days=options["days"], actor=Actor.cli())
        self.stdout.write(f"Removed {outcome.removed} audit event(s).")
