from django.core.management.base import BaseCommand, CommandError

from core.actors import Actor
from core.choices import JobStatusChoices
from hosts.jobs import refresh_host_job
from hosts.models import Host
from hosts.services import host_refresh_request


class Command(BaseCommand):
    help = "Queue a refresh of every host; with --wait, run the refreshes here and print a summary."

    def add_arguments(self, parser):
        parser.add_argument(
            "--wait", action="store_true", help="Run in this process (no worker needed) and report each host."
        )

    def handle(self, *args, **options):
        wait = options["wait"]
        failed = 0
        hosts = list(Host.objects.all())
        if not hosts:
            self.stdout.write("No hosts in the inventory.")
            return
        for host in hosts:
            job = host_refresh_request(host=host, actor=Actor.cli(), enqueue=not wait)
            if job is None:
                self.stdout.write(f"{host.name}: skipped ({host.get_status_display()})")
                continue
            if not wait:
                self.stdout.write(f"{host.name}: refresh queued as job #{job.pk}")
                continue
            refresh_host_job(job.pk, host.pk)
            job.refresh_from_db()
            if job.status == JobStatusChoices.SUCCEEDED:
                result = job.result or {}
                self.stdout.write(
                    f"{host.name}: ok, {result.get('vms', 0)} guest(s) "
                    f"({result.get('added', 0)} new, {result.get('removed', 0)} gone)"
                )
            else:
                failed += 1
                self.stdout.write(f"{host.name}: {job.status}: {job.error}")
                if job.error_hint:
                    self.stdout.write(f"  what to do: {job.error_hint}")
        if failed:
            raise CommandError(f"{failed} of {len(hosts)} host(s) could not be refreshed.")
