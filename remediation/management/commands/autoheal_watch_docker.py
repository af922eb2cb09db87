"""manage.py autoheal_watch_docker: Docker health events of opted-in containers become alerts."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand

from remediation.docker_watch import DockerWatcher
from remediation.executors.docker import client


class Command(BaseCommand):
    help = (
        "Follow the Docker events stream (DOCKER_HOST) and feed `health_status` changes of containers "
        "labelled autoheal.enable=true into the remediation pipeline; runs until SIGTERM or SIGINT."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--label",
            action="append",
            default=[],
            metavar="KEY[=VALUE]",
            help="only containers that also carry this Docker label (repeatable), e.g. com.docker.compose.project=shop",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        watcher = DockerWatcher(client_factory=lambda: client(timeout=60), labels=options["label"])

        def _stop(signum: int, frame: Any) -> None:
            watcher.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.stdout.write("watching Docker health events")
        watcher.run_forever()
