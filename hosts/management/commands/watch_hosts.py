import signal
import threading

from django.core.management.base import BaseCommand

from hosts.watcher import HostEventWatch


class Command(BaseCommand):
    help = (
        "Listen to libvirt lifecycle events of every trusted host and queue a refresh of the host "
        "whose guests changed. Reconnects with backoff; runs until interrupted."
    )

    def handle(self, *args, **options):
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        self.stdout.write("Watching libvirt events; Ctrl-C to stop.")
        HostEventWatch().run(stop)
        self.stdout.write("Stopped.")
