from django.core.management.base import BaseCommand

from core.audit_chain import checkpoint_write


class Command(BaseCommand):
    help = "Sign the audit chain's head into a checkpoint now (and the checkpoint file, when set)."

    def handle(self, *args, **options):
        cp = checkpoint_write()
        self.stdout.write(f"Checkpoint #{cp.pk} signs event #{cp.event_id}.")
