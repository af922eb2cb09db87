"""manage.py autoheal_policies export [FILE] | import FILE [--dry-run]: policies as YAML, for git."""

from __future__ import annotations

import getpass
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from remediation.policies import (
    PolicyImportError,
    PolicyImportResult,
    policies_export,
    policies_import,
    policies_load_yaml,
)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (common in containers)
        return "cli"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 120 else text[:117] + "..."


class Command(BaseCommand):
    help = (
        "Export policies as YAML (to FILE or stdout), or import them from FILE ('-' for stdin): "
        "import validates everything first, changes nothing on any error, and is idempotent."
    )

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="operation", required=True)
        export = sub.add_parser("export", help="write every policy as YAML")
        export.add_argument("file", nargs="?", help="where to write (default: stdout)")
        imp = sub.add_parser("import", help="create or update policies by name from a YAML file")
        imp.add_argument("file", help="the YAML file, or - for stdin")
        imp.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
        imp.add_argument("--actor", default="", help="who to record in the audit trail (default: cli:<user>)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["operation"] == "export":
            self._export(options.get("file"))
        else:
            self._import(options["file"], dry_run=options["dry_run"], actor=options["actor"] or _actor())

    def _export(self, file: str | None) -> None:
        text = policies_export()
        if not file or file == "-":
            self.stdout.write(text, ending="")
            return
        target = Path(file)
        # Write next to the target and rename, so a failed export never leaves half a file.
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=".policies-")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, target)
        except OSError as exc:
            raise CommandError(f"cannot write {file}: {exc.strerror}") from None
        self.stderr.write(f"exported to {file}")

    def _import(self, file: str, *, dry_run: bool, actor: str) -> None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise CommandError(f"cannot read {file}: {reason}") from None
        try:
            result = policies_import(documents=policies_load_yaml(text), actor=actor, dry_run=dry_run)
        except PolicyImportError as exc:
            lines = "\n".join(f"  - {problem}" for problem in exc.problems)
            raise CommandError(f"{file}: nothing imported, {len(exc.problems)} problem(s):\n{lines}") from None
        self._report(result)

    def _report(self, result: PolicyImportResult) -> None:
        verb = "would be " if result.dry_run else ""
        for name in result.created:
            self.stdout.write(f"{name}: {verb}created")
        for name, changes in result.updated.items():
            self.stdout.write(f"{name}: {verb}updated")
            for field, change in changes.items():
                self.stdout.write(f"    {field}: {_short(change['old'])} -> {_short(change['new'])}")
        for name in result.unchanged:
            self.stdout.write(f"{name}: unchanged")
        summary = f"{len(result.created)} created, {len(result.updated)} updated, {len(result.unchanged)} unchanged"
        if result.dry_run:
            summary += " (dry run: nothing was changed)"
        self.stdout.write(summary)
