from django.core.management.base import BaseCommand, CommandError
from django.http import QueryDict

from core.actors import Actor
from core.audit_export import FORMATS, audit_export_start, export_lines
from core.filtersets import filtered_events


class Command(BaseCommand):
    help = ("Write the audit events the filter selects to stdout, newest first (CSV with a header row, "
            "or JSON Lines; ISO-8601 UTC times). The export is itself audited and checkpointed.")

    def add_arguments(self, parser):
        parser.add_argument("--since", help="from this time (ISO 8601, UTC unless it says otherwise)")
        parser.add_argument("--until", help="up to (not including) this time")
        parser.add_argument("--action", help="an action, or a family: migration.*")
        parser.add_argument("--actor", help="who acted (username, cli:<user>, system)")
        parser.add_argument("--format", choices=FORMATS, default="csv")

    def handle(self, *args, **options):
        params = QueryDict(mutable=True)
        for name in ("since", "until", "action", "actor"):
            if options.get(name):
                params[name] = options[name]
        filterset, queryset = filtered_events(params)
        if not filterset.is_valid():
            problems = "; ".join(f"--{name}: {' '.join(errors)}" for name, errors in filterset.errors.items())
            raise CommandError(problems)
        queryset = audit_export_start(queryset=queryset, filters=params.dict(), fmt=options["format"],
                                      actor=Actor.cli())
        for piece in export_lines(queryset, options["format"]):
            self.stdout.write(piece, ending="")
        self.stdout.flush()
