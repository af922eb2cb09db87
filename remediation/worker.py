"""The remediation loop: claims queued jobs, runs actions, verifies.

Built from small steps that each do one unit of work and say whether they did something; the loop
sleeps only when every step was idle (woken early by the job notification), and stops cleanly when
asked: the action in progress finishes and is recorded, then the loop exits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import close_old_connections, connections

from fleet.handover import jobs_host_offline
from remediation import safety, wakeup
from remediation.execution.leases import job_claim, leases_expire
from remediation.execution.run import job_run
from remediation.execution.verify import jobs_verify

logger = logging.getLogger(__name__)

# The worker keeps its database connection between ticks (reconnecting every second would cost
# more than the work), but replaces it when it broke or after this many seconds.
CONNECTION_MAX_AGE = 300.0


class Worker:
    """One worker; any number may run at once against the same database."""

    def __init__(self, *, name: str, idle_sleep: float | None = None) -> None:
        self.name = name[:100]
        poll = float(settings.AUTOHEAL_WORKER_POLL_SECONDS)
        self.idle_sleep = min(poll, idle_sleep) if idle_sleep is not None else poll
        self.stop_event = threading.Event()
        self._connected_at = time.monotonic()
        self.steps: list[Callable[[], bool]] = [
            self.end_expired_pause,
            self.half_open_circuit,
            self.expire_leases,
            self.expire_offline_hosts,
            self.verify_due,
            self.run_one_job,
        ]

    # Each step: one unit of work, True if it did something.

    def end_expired_pause(self) -> bool:
        return safety.pause_expire()

    def half_open_circuit(self) -> bool:
        return safety.circuit_half_open()

    def expire_leases(self) -> bool:
        return leases_expire() > 0

    def expire_offline_hosts(self) -> bool:
        # Fleet hook: jobs placed on a host whose agent stayed away past the TTL end host_offline.
        return jobs_host_offline() > 0

    def verify_due(self) -> bool:
        return jobs_verify() > 0

    def run_one_job(self) -> bool:
        job = job_claim(worker=self.name)
        if job is None:
            return False
        outcome = job_run(job=job, worker=self.name)
        logger.info("worker %s: job %s -> %s %s", self.name, job.pk, outcome.state, outcome.reason)
        return True

    def tick(self) -> bool:
        """Run every step once; True if any did something."""
        did_work = False
        for step in self.steps:
            if self.stop_event.is_set():
                break
            try:
                did_work = step() or did_work
            except Exception:
                logger.exception("worker %s: step %s failed", self.name, step.__name__)
        return did_work

    def run_forever(self) -> None:
        logger.info("worker %s started (wake-up: %s)", self.name, wakeup.transport())
        wakeup.listen()
        try:
            while not self.stop_event.is_set():
                self.close_stale_connections()
                if not self.tick() and not self.stop_event.is_set():
                    wakeup.wait_for_jobs(self.idle_sleep)
        finally:
            wakeup.stop_listening()
            close_old_connections()
            logger.info("worker %s stopped", self.name)

    def close_stale_connections(self) -> None:
        """Drop a connection that broke (database restart) or aged out; the next query reconnects."""
        aged = time.monotonic() - self._connected_at > CONNECTION_MAX_AGE
        for conn in connections.all(initialized_only=True):
            if conn.connection is None or conn.in_atomic_block:
                continue
            if aged or (conn.errors_occurred and not conn.is_usable()):
                conn.close()
        if aged:
            self._connected_at = time.monotonic()

    def stop(self) -> None:
        """Ask the loop to finish its current step and exit."""
        self.stop_event.set()
        wakeup.wake_local()
