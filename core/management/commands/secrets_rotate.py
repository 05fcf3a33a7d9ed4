from django.core.management.base import BaseCommand, CommandError

from core.actors import Actor
from core.audit import audit_record_now
from core.choices import AuditResultChoices
from core.encryption import encrypted_fields, secrets_keys, secrets_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (host SSH keys and passwords, the portal's key) with the first "
        "key of VMPORTAL_SECRETS_KEY. Put the new key first (VMPORTAL_SECRETS_KEY=NEW,OLD or a new first "
        "line in var/secrets.key), run this, then drop the old key."
    )

    def handle(self, *args, **options):
        keys = secrets_keys()
        results = secrets_rotate()
        unreadable = {r.field: r.unreadable for r in results if r.unreadable}
        audit_record_now(
            actor=Actor.system(),
            action="secrets.rotate",
            result=AuditResultChoices.FAILED if unreadable else AuditResultChoices.OK,
            # A list, not a dict keyed by field name: names like "secret_encrypted" would be redacted.
            parameters={"keys_configured": len(keys),
                        "fields": [{"field": r.field, "rotated": r.rotated, "unreadable": r.unreadable}
                                   for r in results]},
            message=f"{sum(r.rotated for r in results)} secret(s) re-encrypted with the newest key.",
        )
        for r in results:
            self.stdout.write(f"{r.field}: {r.rotated} re-encrypted")
        if unreadable:
            listed = "; ".join(f"{field} pk {', '.join(pks)}" for field, pks in unreadable.items())
            raise CommandError(
                f"No configured key opens: {listed}. They were left as they are; add the key they were "
                "stored with to VMPORTAL_SECRETS_KEY (after the new one) and run this again."
            )
        if not encrypted_fields():
            raise CommandError("No app registered an encrypted field: nothing was rotated.")
        self.stdout.write(self.style.SUCCESS(
            "Every stored secret now opens with the first key; the other keys can be removed."
            if len(keys) > 1 else "Every stored secret is encrypted with the configured key."
        ))
