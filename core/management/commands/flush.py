"""Django's flush, which empties every table: the audit tables' append-only triggers are
lifted for the wipe and put back (the test suite flushes between transactional tests)."""

from django.core.management.commands import flush
from django.db import connections

from core import audit_triggers


class Command(flush.Command):
    def handle(self, **options):
        connection = connections[options["database"]]
        had_triggers = audit_triggers.installed(connection)
        if had_triggers:
            audit_triggers.remove(connection)
        try:
            return super().handle(**options)
        finally:
            if had_triggers:
                audit_triggers.install(connection)
