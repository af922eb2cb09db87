"""manage.py autoheal_canary_check --prometheus URL [--window 24h] [--expect ALERTNAME ...]."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from autoheal_site.env import parse_duration
from operations.canary import canary_evaluate, canary_observe


class Command(BaseCommand):
    help = (
        "Check the canary's success criteria: Autoheal's rules loaded and healthy in Prometheus, no Autoheal "
        "alert firing or fired in the window (SLOs green), action_dry_run events for the expected alerts, "
        "nothing run for real while dry-run is on. Exits non-zero with the reasons when any fails."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--prometheus",
            default=settings.AUTOHEAL_PROMETHEUS_URL,
            help="Prometheus base URL (default AUTOHEAL_PROMETHEUS_URL).",
        )
        parser.add_argument("--window", default="24h", help="How far back to look: 30m, 24h, 2d (default 24h).")
        parser.add_argument(
            "--expect",
            nargs="*",
            default=[],
            metavar="ALERTNAME",
            help="Alert names that must have produced action_dry_run events in the window.",
        )
        parser.add_argument(
            "--alert-label",
            default="service=autoheal",
            help="The label that marks Autoheal's own alerts (default service=autoheal).",
        )
        parser.add_argument("--timeout", type=float, default=10.0, help="Seconds per Prometheus request.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["prometheus"]:
            raise CommandError("no Prometheus URL: pass --prometheus URL or set AUTOHEAL_PROMETHEUS_URL")
        if not options["prometheus"].startswith(("http://", "https://")):
            raise CommandError("--prometheus must start with http:// or https://")
        try:
            window = parse_duration(options["window"])
        except ValueError as exc:
            raise CommandError(f"--window: {exc}") from None
        name, sep, value = options["alert_label"].partition("=")
        if not sep or not name.strip() or not value.strip():
            raise CommandError("--alert-label must look like name=value, e.g. service=autoheal")
        observation = canary_observe(
            prometheus_url=options["prometheus"],
            window=window,
            expected=options["expect"],
            label=(name.strip(), value.strip()),
            timeout=options["timeout"],
        )
        checks = canary_evaluate(observation=observation)
        for check in checks:
            mark = self.style.SUCCESS("PASS") if check.ok else self.style.ERROR("FAIL")
            self.stdout.write(f"{mark} {check.name}: {check.detail}")
        failed = [check for check in checks if not check.ok]
        if failed:
            reasons = "; ".join(f"{check.name}: {check.detail}" for check in failed)
            raise CommandError(f"canary check failed ({len(failed)} of {len(checks)}): {reasons}")
        self.stdout.write(self.style.SUCCESS(f"canary check passed ({len(checks)} checks)"))
