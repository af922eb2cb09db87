"""manage.py autoheal_agent --server URL --host NAME: the fleet agent of one Docker host."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fleet.agent import DEFAULT_STATE_DIR, Central, FleetAgent, ReportSpool
from remediation.executors.docker import client


def agent_token() -> str:
    """AUTOHEAL_AGENT_TOKEN, or the first line of AUTOHEAL_AGENT_TOKEN_FILE."""
    token = os.environ.get("AUTOHEAL_AGENT_TOKEN", "").strip()
    path = os.environ.get("AUTOHEAL_AGENT_TOKEN_FILE", "").strip()
    if not token and path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CommandError(f"AUTOHEAL_AGENT_TOKEN_FILE cannot be read: {exc.strerror}") from None
    if not token:
        raise CommandError(
            "set AUTOHEAL_AGENT_TOKEN or AUTOHEAL_AGENT_TOKEN_FILE (manage.py autoheal_agent_token create)"
        )
    return token


def report_spool() -> ReportSpool:
    """The spool of undelivered reports in AUTOHEAL_AGENT_STATE_DIR (default /var/lib/autoheal-agent)."""
    directory = Path(os.environ.get("AUTOHEAL_AGENT_STATE_DIR", "").strip() or DEFAULT_STATE_DIR)
    try:
        return ReportSpool(directory)
    except OSError as exc:
        raise CommandError(
            f"the state directory {directory} (AUTOHEAL_AGENT_STATE_DIR) cannot be written: {exc.strerror}"
        ) from None


class Command(BaseCommand):
    help = (
        "Run the fleet agent of this Docker host: pull the host's jobs from the central Autoheal, act on the local "
        "engine (DOCKER_HOST or the default socket), report outcomes, inventory and health events. Needs no database; "
        "only connects out. Undelivered reports are kept in AUTOHEAL_AGENT_STATE_DIR (default /var/lib/autoheal-agent). "
        "Stops after the current action on SIGTERM."
    )
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--server", required=True, help="the central's base URL, e.g. https://autoheal.example.org")
        parser.add_argument("--host", required=True, help="this host's name, as its token was created for")
        parser.add_argument(
            "--poll-seconds", type=float, default=None, help="long-poll length (default: the central's)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        server = options["server"]
        if not server.startswith(("http://", "https://")):
            raise CommandError("--server must be an http:// or https:// URL")
        central = Central(server=server, host=options["host"], token=agent_token())
        agent = FleetAgent(
            central=central,
            docker_factory=lambda: client(timeout=60),
            version=settings.VERSION,
            poll_seconds=options["poll_seconds"] or float(settings.AUTOHEAL_AGENT_POLL_SECONDS),
            spool=report_spool(),
        )

        def _stop(signum: int, frame: Any) -> None:
            agent.request_stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.stderr.write(f"agent of host {options['host']} -> {server}")
        agent.run_forever()
