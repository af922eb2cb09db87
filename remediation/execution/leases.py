"""A job's lease: claimed by one worker, renewed while its action runs, expired when the worker dies.

The claim commits before anything else happens, so no row lock is held while an action runs; the
lease is what says the job is still being worked on.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from audit.services import audit_record
from fleet.placement import local_hosts
from remediation.execution.facts import audit_base, host_data
from remediation.execution.transitions import job_lost, job_requeue
from remediation.models import Job

logger = logging.getLogger(__name__)


def job_claim(*, worker: str, now: datetime | None = None, hosts: tuple[str, ...] | None = None) -> Job | None:
    """Take one due queued job for this worker, or None. Two workers never get the same job."""
    jobs = job_claim_many(worker=worker, limit=1, now=now, hosts=hosts)
    return jobs[0] if jobs else None


def job_claim_many(
    *, worker: str, limit: int, now: datetime | None = None, hosts: tuple[str, ...] | None = None
) -> list[Job]:
    """Take up to ``limit`` due queued jobs for this worker in one transaction, oldest due first.

    Two workers never get the same job: on PostgreSQL the candidates are locked with ``SKIP
    LOCKED`` (another worker's claim in progress is passed over, not waited for), elsewhere each
    conditional ``UPDATE ... WHERE state='queued'`` must touch exactly one row.

    ``hosts``: the placements this claimer serves; the central worker's default leaves the jobs
    placed on an agent's host to that agent (fleet.placement.local_hosts).
    """
    now = now or timezone.now()
    lease = now + timedelta(seconds=settings.AUTOHEAL_LEASE_SECONDS)
    owner = worker[:100]
    due = Job.objects.filter(
        state=Job.State.QUEUED, not_before__lte=now, host__in=hosts if hosts is not None else local_hosts()
    ).order_by("not_before", "id")
    claim = {"state": Job.State.RUNNING, "lease_owner": owner, "lease_expires_at": lease, "attempts": F("attempts") + 1}
    if connection.vendor == "postgresql":
        with transaction.atomic():
            ids = list(due.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True)[:limit])
            if not ids:
                return []
            Job.objects.filter(pk__in=ids).update(**claim)
    else:
        ids = []
        for candidate in due.values_list("pk", flat=True)[: limit + 4]:
            # The WHERE state='queued' makes the UPDATE the arbiter: only one worker can flip it.
            if Job.objects.filter(pk=candidate, state=Job.State.QUEUED).update(**claim) == 1:
                ids.append(candidate)
                if len(ids) >= limit:
                    break
        if not ids:
            return []
    return list(Job.objects.select_related("alert", "policy").filter(pk__in=ids).order_by("not_before", "id"))


class Heartbeat:
    """Renews the leases of this worker's jobs while an action runs, on its own connection.

    Every job the worker holds is renewed, not only the running one, so jobs claimed in the same
    batch and still waiting their turn keep their leases however long the action takes.
    """

    def __init__(self, *, job_id: int, worker: str) -> None:
        self.job_id = job_id
        self.worker = worker[:100]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from django.db import connection as thread_connection

        interval = max(0.5, settings.AUTOHEAL_LEASE_SECONDS / 3)
        try:
            while not self._stop.wait(interval):
                try:
                    Job.objects.filter(state=Job.State.RUNNING, lease_owner=self.worker).update(
                        lease_expires_at=timezone.now() + timedelta(seconds=settings.AUTOHEAL_LEASE_SECONDS)
                    )
                except Exception:
                    logger.warning("could not renew the lease of job %s", self.job_id)
        finally:
            thread_connection.close()


def leases_expire(*, now: datetime | None = None) -> int:
    """Jobs whose worker died: an action that started becomes ``unknown`` and is never re-run.

    A job claimed but not yet started (the worker died before acting) is safely queued again.
    """
    now = now or timezone.now()
    done = 0
    if not Job.objects.filter(state=Job.State.RUNNING, lease_expires_at__lt=now).exists():
        return 0
    with transaction.atomic():
        expired = Job.objects.filter(state=Job.State.RUNNING, lease_expires_at__lt=now).select_related("alert")
        if connection.vendor == "postgresql":
            expired = expired.select_for_update(skip_locked=True, of=("self",))
        for job in expired[:50]:
            base = audit_base(job)
            if job.started_at is None:
                job_requeue(job_id=job.pk)
                audit_record(
                    kind="action_retry",
                    message="the worker stopped before the action started; queued again",
                    data={
                        "job": job.pk,
                        "action": job.action,
                        "error": "worker lost before start",
                        "try": job.attempts,
                        "retry_in_seconds": 0,
                        **host_data(job),
                    },
                    **base,
                )
            else:
                job_lost(job_id=job.pk, now=now)
                audit_record(
                    kind="action_unknown",
                    message=(
                        f"worker {job.lease_owner} stopped answering during the action; its outcome is unknown and it "
                        "will not be repeated automatically"
                    ),
                    data={
                        "job": job.pk,
                        "action": job.action,
                        "attempt": job.attempt,
                        "worker": job.lease_owner,
                        "started_at": job.started_at.isoformat(),
                        **host_data(job),
                    },
                    **base,
                )
            done += 1
    return done
