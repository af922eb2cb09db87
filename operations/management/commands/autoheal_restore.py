"""manage.py autoheal_restore --input DIR: restore a backup made by autoheal_backup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from operations.backup import BackupError, backup_restore


class Command(BaseCommand):
    help = (
        "Restore a backup made by autoheal_backup. Stop the web and worker processes first. Every checksum is "
        "verified before anything changes; a database that holds data is replaced only with --force."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--input", required=True, type=Path, help="The backup directory.")
        parser.add_argument("--force", action="store_true", help="Replace a database that already holds data.")
        parser.add_argument(
            "--prometheus-data",
            type=Path,
            default=None,
            help="Prometheus's data directory (Prometheus stopped) to copy the snapshot's blocks into.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = backup_restore(
                source=options["input"], force=options["force"], prometheus_data=options["prometheus_data"]
            )
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        for note in report.notes:
            self.stdout.write(note)
        for warning in report.warnings:
            self.stderr.write(f"WARNING: {warning}")
        self.stdout.write(self.style.SUCCESS(f"restored from {report.directory}; run manage.py audit_verify next"))
