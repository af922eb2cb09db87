"""The remediation loop: claims queued jobs, runs actions, verifies.

Built from small steps that each do one unit of work and say whether they did something; the loop
sleeps only when every step was idle, and stops cleanly when asked.
"""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections

logger = logging.getLogger(__name__)


class Worker:
    """One worker; any number may run at once against the same database."""

    def __init__(self, *, name: str, idle_sleep: float = 1.0) -> None:
        self.name = name
        self.idle_sleep = idle_sleep
        self.stop_event = threading.Event()

    def tick(self) -> bool:
        """Do one unit of work; return True if something was done."""
        return False

    def run_forever(self) -> None:
        logger.info("worker %s started", self.name)
        while not self.stop_event.is_set():
            close_old_connections()
            did_work = False
            try:
                did_work = self.tick()
            except Exception:
                logger.exception("worker %s: step failed", self.name)
            if not did_work:
                self.stop_event.wait(self.idle_sleep)
        close_old_connections()
        logger.info("worker %s stopped", self.name)

    def stop(self) -> None:
        self.stop_event.set()
