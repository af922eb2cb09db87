"""manage.py autoheal_backup --output DIR: database, JSONL mirror, Prometheus snapshot, manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from operations.backup import BackupError, backup_create


class Command(BaseCommand):
    help = (
        "Back up Autoheal into a new directory: the database (pg_dump when it is on PATH, SQLite's backup "
        "API, or a portable JSON dump), the JSONL mirror, a Prometheus TSDB snapshot when configured, "
        "and a manifest with row counts and checksums."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--output", required=True, type=Path, help="A new or empty directory.")
        parser.add_argument(
            "--db-format",
            choices=["auto", "native", "json"],
            default="auto",
            help="auto: pg_dump or SQLite backup when possible, else JSON; native: fail without them; json: portable.",
        )
        parser.add_argument(
            "--prometheus",
            default=settings.AUTOHEAL_PROMETHEUS_URL,
            help="Prometheus URL for a TSDB snapshot (admin API; default AUTOHEAL_PROMETHEUS_URL; '' to skip).",
        )
        parser.add_argument(
            "--prometheus-data",
            type=Path,
            default=None,
            help="Prometheus's data directory as seen from here, to copy the snapshot into the backup.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = backup_create(
                output=options["output"],
                db_format=options["db_format"],
                prometheus_url=options["prometheus"],
                prometheus_data=options["prometheus_data"],
            )
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        for note in report.notes:
            self.stdout.write(note)
        counts = report.manifest["database"]["counts"]
        self.stdout.write(
            f"rows: {sum(counts.values())} in {len(counts)} tables; files: {len(report.manifest['files'])}"
        )
        for warning in report.warnings:
            self.stderr.write(f"WARNING: {warning}")
        self.stdout.write(self.style.SUCCESS(f"backup written to {report.directory}"))
