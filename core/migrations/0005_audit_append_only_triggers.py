"""Triggers refusing UPDATE and DELETE on the audit tables (core.audit_triggers)."""

from django.db import migrations

from core import audit_triggers


def install(apps, schema_editor):
    audit_triggers.install(schema_editor.connection)


def remove(apps, schema_editor):
    audit_triggers.remove(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("core", "0004_audit_chain_existing_events")]

    operations = [migrations.RunPython(install, remove)]
