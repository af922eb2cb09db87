"""``manage.py audit_seal``: chain pending audit events, once or continuously."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.sealer import SealerLoop, audit_seal_all, pending_count


class Command(BaseCommand):
    help = (
        "Chain committed pending audit events into the hash chain. Every worker already runs a "
        "sealer; run this to seal a backlog now (--once) or as a dedicated sealer process."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="seal what is pending now, then exit")
        parser.add_argument("--interval", type=float, default=0.05, help="seconds between polls when idle")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["interval"] <= 0:
            raise CommandError("--interval must be positive")
        if options["once"]:
            sealed = audit_seal_all(wait=30.0)
            left = pending_count()
            self.stdout.write(f"sealed {sealed} events; {left} still pending")
            if left:
                raise CommandError(
                    f"{left} events are still pending (another sealer holds the lock, or writers are busy)"
                )
            return
        loop = SealerLoop(interval=options["interval"])

        def _stop(signum: int, frame: Any) -> None:
            loop.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        loop.run_forever()
