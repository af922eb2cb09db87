"""manage.py autoheal_worker: run the remediation loop until SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

from django.core.management.base import BaseCommand

from remediation.worker import Worker


class Command(BaseCommand):
    help = "Run the remediation worker: claims queued jobs, runs actions, verifies."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--name", default=f"{socket.gethostname()}:{os.getpid()}")

    def handle(self, *args: Any, **options: Any) -> None:
        worker = Worker(name=options["name"])

        def _stop(signum: int, frame: Any) -> None:
            worker.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        worker.run_forever()
