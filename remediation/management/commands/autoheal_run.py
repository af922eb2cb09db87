"""manage.py autoheal_run: web and worker in one process, for the embedded defaults.

With no Redis, live events reach SSE clients only inside one process, so the all-in-one mode runs
the worker loop in a thread beside daphne. Production runs them as separate processes.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from daphne.cli import CommandLineInterface
from django.conf import settings
from django.core.management.base import BaseCommand

from remediation.worker import Worker


class Command(BaseCommand):
    help = "Run the web server and one worker together (the README's run command)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.AUTOHEAL_PORT)

    def handle(self, *args: Any, **options: Any) -> None:
        worker = Worker(name=f"{socket.gethostname()}:{os.getpid()}:allinone")
        thread = threading.Thread(target=worker.run_forever, name="autoheal-worker", daemon=True)
        thread.start()
        self.stdout.write(f"Autoheal on http://{options['host']}:{options['port']}/ (web + worker)")
        try:
            CommandLineInterface().run(
                ["-b", options["host"], "-p", str(options["port"]), "autoheal_site.asgi:application"]
            )
        finally:
            worker.stop()
            thread.join(timeout=10)
