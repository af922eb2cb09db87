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

from audit.sealer import SealerLoop, audit_seal_all
from fleet.handover import jobs_host_offline
from notifications.outbox import notification_deliver_one
from remediation import safety, wakeup
from remediation.approvals import approval_expire_one
from remediation.execution.batch import batchable, jobs_run
from remediation.execution.leases import job_claim_many, leases_expire
from remediation.execution.verify import jobs_verify
from remediation.gate import silence_sweep_one
from remediation.models import Job

logger = logging.getLogger(__name__)

# The worker keeps its database connection between ticks (reconnecting every second would cost
# more than the work), but replaces it when it broke or after this many seconds.
CONNECTION_MAX_AGE = 300.0
# Jobs claimed per round trip. Claimed jobs wait in this worker with their leases renewed; a batch
# small enough that other workers still get their share of a burst.
CLAIM_BATCH = 8
# While the queue stays deep (every claim came back full) and held only jobs that finish at once
# (log_only, run together: remediation.execution.batch), each claim doubles up to this; it falls
# back as soon as a claim comes back short or holds a job that takes time. Claims use SKIP LOCKED,
# so other workers take the next jobs meanwhile: they still get their share.
CLAIM_BATCH_MAX = 64
# Housekeeping (end a pause, half-open the breaker, expire leases, verify, expire approvals, sweep
# silences, deliver a notification) runs when the worker is
# idle and otherwise at most this often, so a busy worker spends its round trips on jobs and a
# wake-up goes straight to the claim.
HOUSEKEEPING_SECONDS = 1.0


def next_claim_size(size: int, claimed: list[Job]) -> int:
    """Double the claim while claims come back full of jobs that finish at once; else start over."""
    if len(claimed) >= size and all(batchable(job) for job in claimed):
        return min(CLAIM_BATCH_MAX, size * 2)
    return CLAIM_BATCH


class Worker:
    """One worker; any number may run at once against the same database."""

    def __init__(self, *, name: str, idle_sleep: float | None = None) -> None:
        self.name = name[:100]
        poll = float(settings.AUTOHEAL_WORKER_POLL_SECONDS)
        self.idle_sleep = min(poll, idle_sleep) if idle_sleep is not None else poll
        self.stop_event = threading.Event()
        self.claim_size = CLAIM_BATCH
        self._connected_at = time.monotonic()
        self.sealer = SealerLoop()
        self._housekept_at: float | None = None
        self.housekeeping: list[Callable[[], bool]] = [
            self.end_expired_pause,
            self.half_open_circuit,
            self.expire_leases,
            self.expire_offline_hosts,
            self.verify_due,
            self.expire_one_approval,
            self.sweep_one_silence,
            self.deliver_one_notification,
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

    def expire_one_approval(self) -> bool:
        return approval_expire_one()

    def sweep_one_silence(self) -> bool:
        return silence_sweep_one()

    def deliver_one_notification(self) -> bool:
        return notification_deliver_one()

    def run_claimed_jobs(self) -> bool:
        """Claim due jobs in one round trip and run them: the ones that finish at once together,
        the others one after the other (remediation.execution.batch.jobs_run).

        A job still waiting here when the worker is asked to stop keeps its lease until the lease
        expires; it has not started, so it is then queued again (never run twice).
        """
        jobs = job_claim_many(worker=self.name, limit=self.claim_size)
        done_together: list[int] = []
        for job, outcome in jobs_run(jobs=jobs, worker=self.name, stop=self.stop_event):
            if outcome.state == Job.State.OK and batchable(job):
                done_together.append(job.pk)
            else:
                logger.info("worker %s: job %s -> %s %s", self.name, job.pk, outcome.state, outcome.reason)
        if done_together:
            # One line for a batch that went through: a busy worker logs per batch, not per job.
            logger.info("worker %s: jobs %s -> ok", self.name, ",".join(map(str, done_together)))
        self.claim_size = next_claim_size(self.claim_size, jobs)
        return bool(jobs)

    def tick(self) -> bool:
        """Housekeeping if due, then a batch of jobs, then housekeeping if there was no job and it
        did not run already; True if anything did something."""
        did_work = housekept = False
        if self._housekept_at is None or time.monotonic() - self._housekept_at >= HOUSEKEEPING_SECONDS:
            did_work, housekept = self._housekeep(), True
        jobs = self._run_steps([self.run_claimed_jobs])
        if not jobs and not housekept:
            did_work = self._housekeep() or did_work
        return did_work or jobs

    def _housekeep(self) -> bool:
        self._housekept_at = time.monotonic()
        return self._run_steps(self.housekeeping)

    def _run_steps(self, steps: list[Callable[[], bool]]) -> bool:
        did_work = False
        for step in steps:
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
        self.sealer.start()
        try:
            while not self.stop_event.is_set():
                self.close_stale_connections()
                if not self.tick() and not self.stop_event.is_set():
                    wakeup.wait_for_jobs(self.idle_sleep)
        finally:
            wakeup.stop_listening()
            self.sealer.stop()
            self.seal_what_is_left()
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

    def seal_what_is_left(self) -> None:
        """On a clean stop, chain this worker's last events now rather than at the next sealer."""
        if self.sealer.enabled:
            try:
                audit_seal_all(wait=2.0)
            except Exception:
                logger.exception("worker %s: could not seal the last audit events; they stay pending", self.name)

    def stop(self) -> None:
        """Ask the loop to finish its current step and exit."""
        self.stop_event.set()
        wakeup.wake_local()
