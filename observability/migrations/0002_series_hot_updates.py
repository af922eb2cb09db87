from django.db import migrations

# Every audit write updates the same few rows. On PostgreSQL, leaving most of each page free lets
# those updates stay "heap-only" (no index change, old versions pruned in place), and vacuuming
# after a fixed number of dead rows keeps the hot rows' version chains short; without this the
# upsert slows down as dead versions pile up between autovacuum runs.
TUNE = (
    "ALTER TABLE observability_series SET (fillfactor = 10, "
    "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000)"
)
UNTUNE = (
    "ALTER TABLE observability_series RESET (fillfactor, "
    "autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold)"
)


def tune(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TUNE)


def untune(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNTUNE)


class Migration(migrations.Migration):

    dependencies = [
        ('observability', '0001_metric_series'),
    ]

    operations = [
        migrations.RunPython(tune, untune),
    ]
