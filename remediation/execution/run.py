"""Running one claimed job: decide, check, mark started under the switch lock, execute.

The guards are decided again under the switch row's lock and the action is marked started in that
same transaction, so two workers can never both spend the last unit of a budget or of the circuit
breaker. The action itself runs with no lock held, while a heartbeat renews the lease.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit.services import audit_record
from remediation import safety
from remediation.decisions import Decision, Limits
from remediation.execution.facts import audit_base, host_data, is_destructive, job_decision, job_spec
from remediation.execution.leases import Heartbeat
from remediation.execution.outcome import RunOutcome, job_finish, job_settle, trip_if_over
from remediation.executors import (
    DEFAULT_TIMEOUT,
    ExecResult,
    JobSpec,
    NotAllowed,
    TargetMissing,
    executor_for,
    timeout_for,
)
from remediation.gate import job_gate
from remediation.models import Job, Switch

logger = logging.getLogger(__name__)


def switch_for_start(*, destructive: bool) -> Switch:
    """The switch row, locked for the start transaction.

    A destructive action takes the row exclusively: its start spends breaker and budget units that
    no other start may spend at the same time. A log-only action spends nothing, so it takes a
    share lock: log-only starts do not wait on each other, while a switch change (which locks the
    row exclusively) still waits for them and they for it, as before.
    """
    if destructive or connection.vendor != "postgresql":
        return safety.switch_locked()
    table = connection.ops.quote_name(Switch._meta.db_table)
    rows = list(Switch.objects.raw(f"SELECT * FROM {table} WHERE id = 1 FOR SHARE"))  # noqa: S608  # nosec B608: only the quoted table name
    return rows[0] if rows else safety.switch_locked()


def started_event(*, job: Job, decision: Decision) -> dict[str, Any]:
    """The ``action_started`` audit event of a job marked started (``job`` as re-read under the lock)."""
    return {
        "kind": "action_started",
        "message": f"{job.action} {job.target}".strip(),
        "data": {
            "job": job.pk,
            "action": job.action,
            "attempt": job.attempt,
            "try": job.attempts,
            "probe": decision.probe,
            **host_data(job),
        },
        **audit_base(job),
    }


def execute_caught(executor: Any, spec: JobSpec, *, timeout: float, job_id: int) -> ExecResult:
    """Run the action. A refusal at execution time or an executor defect is a failed result, never
    raised; ``TargetMissing`` is raised, since nothing ran (the caller settles it as a skip)."""
    try:
        result: ExecResult = executor.execute(spec, timeout=timeout)
    except TargetMissing:
        raise
    except NotAllowed as exc:
        return ExecResult(ok=False, detail=f"refused at execution time: {exc}")
    except Exception as exc:
        logger.exception("job %s: executor raised", job_id)
        return ExecResult(ok=False, detail=f"executor error: {type(exc).__name__}: {exc}")
    return result


def job_run(*, job: Job, worker: str, limits: Limits | None = None) -> RunOutcome:
    """Decide, check, start, execute and finish one claimed job."""
    limits = limits or safety.limits_from_settings()
    now = timezone.now()
    # First pass without locks, so a disabled or resolved job never causes a Docker call.
    decision = job_decision(job=job, alert=job.alert, row=Switch.objects.current(), now=now, limits=limits)
    if decision.verdict in ("skip", "delay"):
        return job_settle(job=job, decision=decision, limits=limits)
    if decision.verdict == "run" and (held := job_gate(job=job, limits=limits, now=now)) is not None:
        return held
    spec = job_spec(job)
    try:
        executor = executor_for(job.action)
        executor.check(spec)
        timeout = timeout_for(spec, default=getattr(executor, "DEFAULT_TIMEOUT", DEFAULT_TIMEOUT))
    except NotAllowed as exc:
        return job_settle(job=job, decision=Decision("skip", exc.reason, str(exc)), limits=limits)
    except Exception as exc:
        logger.warning("job %s: check failed: %s", job.pk, type(exc).__name__)
        return job_finish(
            job=job, result=ExecResult(ok=False, transient=True, detail=f"check failed: {exc}"), started=None
        )

    with transaction.atomic():
        row = switch_for_start(destructive=is_destructive(job.action))
        now = timezone.now()
        current = Job.objects.select_related("alert", "policy").get(pk=job.pk)
        if current.state != Job.State.RUNNING or current.lease_owner != worker[:100]:
            return RunOutcome(state=current.state, reason="lease lost before start")
        decision = job_decision(job=current, alert=current.alert, row=row, now=now, limits=limits)
        if decision.verdict != "run":
            return job_settle(job=current, decision=decision, limits=limits)
        current.started_at = now
        current.lease_expires_at = now + timedelta(seconds=settings.AUTOHEAL_LEASE_SECONDS)
        current.save(update_fields=["started_at", "lease_expires_at"])
        audit_record(**started_event(job=current, decision=decision))
        if is_destructive(job.action) and not decision.probe:
            trip_if_over(row=row, now=now, limits=limits, counting_start=True)
    job = current

    heartbeat = Heartbeat(job_id=job.pk, worker=worker)
    heartbeat.start()
    started = time.monotonic()
    try:
        result = execute_caught(executor, spec, timeout=timeout, job_id=job.pk)
    except TargetMissing as exc:
        # The target vanished after the check: nothing ran, so a skip (SKIPPED is not counted).
        heartbeat.stop()
        return job_settle(job=job, decision=Decision("skip", exc.reason, str(exc)), limits=limits)
    finally:
        heartbeat.stop()
    return job_finish(job=job, result=result, started=time.monotonic() - started, probe=decision.probe, limits=limits)
