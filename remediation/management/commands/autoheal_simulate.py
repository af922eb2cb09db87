"""manage.py autoheal_simulate FILE.json: what a payload would do today, touching nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from remediation.payload import PayloadError
from remediation.simulation import payload_simulate


class Command(BaseCommand):
    help = "Run an Alertmanager webhook payload through routing and every guard, and print what would happen."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", help="an Alertmanager webhook v4 JSON body ('-' reads stdin)")
        parser.add_argument("--json", action="store_true", help="print one JSON object per line")
        parser.add_argument(
            "--no-check", action="store_true", help="do not inspect targets (Docker, DNS): guards and routing only"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source = options["file"]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {source}: {exc.strerror}") from None
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{source} is not JSON: {exc.msg} at line {exc.lineno}") from None
        try:
            outcomes = payload_simulate(payload=payload, check=not options["no_check"])
        except PayloadError as exc:
            raise CommandError(f"{source} is not an Alertmanager webhook v4 payload: {exc}") from None
        for outcome in outcomes:
            if options["json"]:
                self.stdout.write(json.dumps(outcome.as_dict(), sort_keys=True))
                continue
            who = f"{outcome.alertname or '(no alertname)'} {outcome.fingerprint}"
            what = f"{outcome.policy}: {outcome.action} {outcome.target}".strip() if outcome.policy else ""
            why = f"{outcome.reason}: {outcome.message}" if outcome.reason else outcome.message
            self.stdout.write(" | ".join(part for part in (who, what, outcome.verdict.upper(), why) if part))
