"""``manage.py audit_import FILE``: restore exported events (idempotent, all or nothing)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.services import AuditImportError, audit_import


class Command(BaseCommand):
    help = (
        "Import a JSONL file written by audit_export (or the JSONL mirror), keeping ids and hashes. "
        "Events already present are skipped; any bad line imports nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the JSONL file, or - for standard input")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["file"]
        try:
            if path == "-":
                result = audit_import(lines=sys.stdin)
            else:
                with open(path, encoding="utf-8") as handle:
                    result = audit_import(lines=handle)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{path} is not UTF-8 text; nothing imported") from None
        except AuditImportError as exc:
            raise CommandError(f"{exc}; nothing imported") from None
        self.stdout.write(f"read {result.read} events: {result.added} added, {result.present} already present")
