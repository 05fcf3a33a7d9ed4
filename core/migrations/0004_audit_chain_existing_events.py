"""Chain the events written before the hash chain existed, in id order, and create the lock row."""

from django.db import migrations

from core.audit_chain import GENESIS_HASH, HASHED_FIELDS, action_family, event_hash


def chain_existing(apps, schema_editor):
    AuditEvent = apps.get_model("core", "AuditEvent")
    AuditChainLock = apps.get_model("core", "AuditChainLock")
    AuditChainLock.objects.get_or_create(pk=1)
    prev, last = GENESIS_HASH, 0
    fields = [name for name in HASHED_FIELDS if name not in ("action_family", "prev_hash")]
    while True:
        chunk = list(AuditEvent.objects.filter(pk__gt=last).order_by("pk").values_list("pk", *fields)[:2000])
        if not chunk:
            return
        for row in chunk:
            values = dict(zip(fields, row[1:]))
            values.update(action_family=action_family(values["action"]), prev_hash=prev)
            prev = event_hash(values)
            AuditEvent.objects.filter(pk=row[0]).update(
                action_family=values["action_family"], prev_hash=values["prev_hash"], hash=prev
            )
        last = chunk[-1][0]


class Migration(migrations.Migration):
    dependencies = [("core", "0003_audit_chain_fields")]

    operations = [migrations.RunPython(chain_existing, migrations.RunPython.noop)]
