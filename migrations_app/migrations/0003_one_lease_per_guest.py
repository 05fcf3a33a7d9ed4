"""One lease per guest replaces the two partial unique constraints (one active live migration,
one active cold migration per guest): every migration under way now holds its guest's lease
(hosts.GuestLease), which also keeps a live and a cold one (or a power action) apart.

Migrations under way when this runs get their lease first, so the rule holds across the upgrade.
"""

from django.db import migrations
from django.urls import NoReverseMatch, reverse

ACTIVE = {
    "migration": ["queued", "checking", "migrating", "completing"],
    "coldmigration": ["queued", "checking", "copying", "defining", "starting"],
}
URL_NAMES = {"migration": "migrations_app:migration_detail", "coldmigration": "migrations_app:cold_detail"}


def _kind(model_name: str, record) -> str:
    if model_name == "coldmigration":
        return "cold-migration"
    return "live-migration" if record.options.get("live", True) else "offline-migration"


def leases_for_migrations_under_way(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    GuestLease = apps.get_model("hosts", "GuestLease")
    under_way = []
    for model_name, statuses in ACTIVE.items():
        model = apps.get_model("migrations_app", model_name)
        under_way += [(r.created, r.pk, model_name, r)
                      for r in model.objects.filter(status__in=statuses).select_related("requested_by")]
    owner_types = {}
    for _created, _pk, model_name, record in sorted(under_way, key=lambda row: row[:2]):
        if GuestLease.objects.filter(guest_uuid=record.vm_uuid).exists():
            continue  # a live and a cold one were both under way (the old constraints allowed it): the older keeps it
        if model_name not in owner_types:
            owner_types[model_name], _ = ContentType.objects.get_or_create(app_label="migrations_app", model=model_name)
        kind = _kind(model_name, record)
        try:
            url = reverse(URL_NAMES[model_name], args=[record.pk])
        except NoReverseMatch:
            url = ""
        GuestLease.objects.create(
            guest_uuid=record.vm_uuid, guest_name=record.vm_name, kind=kind, owner_type=owner_types[model_name],
            owner_id=record.pk, owner_label=f"{kind.replace('-', ' ')} #{record.pk}", owner_url=url,
            actor=record.requested_by,
            actor_label=record.requested_by.username if record.requested_by else "system",
            since=record.created,
        )


class Migration(migrations.Migration):

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("hosts", "0003_guest_lease"),
        ("migrations_app", "0002_cold_migration"),
    ]

    operations = [
        migrations.RunPython(leases_for_migrations_under_way, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name="coldmigration",
            name="migrations_one_active_cold_per_vm",
        ),
        migrations.RemoveConstraint(
            model_name="migration",
            name="migrations_one_active_per_vm",
        ),
    ]
