import json

from django.core.management.base import BaseCommand, CommandError

from core.audit_verify import verify_chain


class Command(BaseCommand):
    help = ("Walk the audit trail's hash chain and its signed checkpoints. Exits 0 when intact; "
            "otherwise 1, naming the first event that does not match and the kind of break.")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args, **options):
        report = verify_chain()
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict()))
        elif report.ok:
            self.stdout.write(f"Audit chain intact: {report.events} events (#{report.first_id}–#{report.last_id}), "
                              f"{report.checkpoints} checkpoints.")
        if not report.ok:
            brk = report.first_break
            raise CommandError(f"Audit chain broken ({brk.kind}) at event #{brk.event_id}: {brk.message}",
                               returncode=1)
