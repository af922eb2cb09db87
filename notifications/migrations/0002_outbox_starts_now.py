"""The outbox starts at the end of the audit trail: an upgrade does not notify about history."""

from django.db import migrations


def start_at_end(apps, schema_editor):  # type: ignore[no-untyped-def]
    AuditEvent = apps.get_model("audit", "AuditEvent")
    OutboxCursor = apps.get_model("notifications", "OutboxCursor")
    last = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    OutboxCursor.objects.update_or_create(pk=1, defaults={"last_event_id": last})


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0001_outbox"),
        ("audit", "0002_search_text_and_retention"),
    ]

    operations = [migrations.RunPython(start_at_end, migrations.RunPython.noop)]
