"""``manage.py audit_prune --older-than 90d``: remove old events that an export already holds."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.models import iso_utc
from audit.services import PruneRefused, audit_prune
from autoheal_site.env import parse_duration


class Command(BaseCommand):
    help = (
        "Remove audit events older than a duration (30s, 15m, 2h, 7d). Refuses to remove events no "
        "complete audit_export has written, unless --force. The chain stays verifiable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", required=True, help="e.g. 90d")
        parser.add_argument("--force", action="store_true", help="prune even events never exported")
        parser.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            older_than = parse_duration(options["older_than"])
        except ValueError as exc:
            raise CommandError(f"--older-than: {exc}") from None
        if older_than.total_seconds() <= 0:
            raise CommandError("--older-than must be more than zero")
        try:
            result = audit_prune(older_than=older_than, force=options["force"], dry_run=options["dry_run"])
        except PruneRefused as exc:
            raise CommandError(str(exc)) from None
        if not result.removed:
            self.stdout.write(f"nothing to prune: no event is older than {iso_utc(result.cutoff)}")
            return
        verb = "would remove" if options["dry_run"] else "removed"
        assert result.through_ts is not None
        self.stdout.write(
            f"{verb} {result.removed} events, ids {result.first_id}..{result.through_id}, "
            f"older than {iso_utc(result.cutoff)} (last one at {iso_utc(result.through_ts)})"
        )
        if result.anchor is not None:
            self.stdout.write(f"chain anchor kept: event {result.through_id} hash {result.anchor.through_hash}")
            if result.anchor.forced:
                self.stdout.write("forced: some of the removed events were never exported")
