"""How a claimed job ends, each in its own transaction with its audit event.

A job that does not run is settled: skipped, delayed (backoff) or recorded as a dry run. A job
whose action ran is finished: ok (and verification pending), queued for a retry after a transient
error, or failed (and the next attempt planned). The circuit breaker opens as soon as one of its
limits is reached, not only when the next job asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from remediation import safety
from remediation.decisions import Decision, Limits
from remediation.execution.facts import audit_base, circuit_counts, host_data, is_destructive, job_spec
from remediation.execution.transitions import job_end, job_requeue
from remediation.execution.verify import attempt_next
from remediation.executors import ExecResult, NotAllowed
from remediation.models import Action, Job, Switch


@dataclass
class RunOutcome:
    """What happened to a claimed job (for logs and tests)."""

    state: str
    reason: str = ""


def job_settle(*, job: Job, decision: Decision, limits: Limits, extra: dict[str, Any] | None = None) -> RunOutcome:
    """A job that does not run: skipped, delayed, or recorded as a dry run (``extra``: more audit data)."""
    now = timezone.now()
    with transaction.atomic():
        if decision.trip_circuit:
            safety.circuit_trip(reason=decision.message, now=now)
        base = audit_base(job)
        if decision.verdict == "delay" and decision.until is not None:
            job_requeue(job_id=job.pk, not_before=decision.until)
            audit_record(
                kind="action_queued",
                message=decision.message,
                data={
                    "job": job.pk,
                    "attempt": job.attempt,
                    "reason": "backoff",
                    "not_before": decision.until.isoformat(),
                },
                **base,
            )
            return RunOutcome(state=Job.State.QUEUED, reason="backoff")
        reason = settle_reason(decision)
        job_end(job_id=job.pk, state=Job.State.SKIPPED, now=now, skip_reason=reason, result=settle_result(decision))
        audit_record(**settle_event(job=job, decision=decision, extra=extra))
    return RunOutcome(state=Job.State.SKIPPED, reason=reason)


def settle_reason(decision: Decision) -> str:
    """The ``skip_reason`` of a job that does not run."""
    return "dry_run" if decision.verdict == "dry_run" else decision.reason


def settle_result(decision: Decision) -> dict[str, Any]:
    """The ``result`` of a job that does not run."""
    return {"decision": decision.verdict, "reason": settle_reason(decision), "message": decision.message}


def settle_event(*, job: Job, decision: Decision, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The audit event of a job that does not run: ``action_dry_run`` or ``action_skipped``."""
    if decision.verdict == "dry_run":
        return {
            "kind": "action_dry_run",
            "message": f"would {job.action} {job.target}: {decision.message}",
            "data": {"job": job.pk, "action": job.action, "attempt": job.attempt, **_would_run(job), **host_data(job)},
            **audit_base(job),
        }
    return {
        "kind": "action_skipped",
        "message": decision.message,
        "data": {
            "job": job.pk,
            "action": job.action,
            "attempt": job.attempt,
            "reason": settle_reason(decision),
            **host_data(job),
            **(extra or {}),
        },
        **audit_base(job),
    }


def result_data(result: ExecResult) -> dict[str, Any]:
    """The ``result`` stored on a job whose action ran."""
    return {"ok": result.ok, "detail": result.detail, "output": result.output}


def outcome_data(*, job: Job, result: ExecResult, duration: float, late: bool = False) -> dict[str, Any]:
    """What ``action_ok`` and ``action_fail`` both carry (the metrics read duration_seconds from them)."""
    return {
        "job": job.pk,
        "action": job.action,
        "attempt": job.attempt,
        "duration_seconds": duration,
        "output": result.output,
        **({"after_unknown": True} if late else {}),
        **host_data(job),
    }


def _would_run(job: Job) -> dict[str, Any]:
    """What a dry run would have run, without parameter values that may hold secrets (headers)."""
    params = job.params or {}
    if job.action == Action.COMMAND:
        from remediation.executors.command import render_argv

        try:
            return {"argv": render_argv(params.get("argv"), job_spec(job).labels)}
        except NotAllowed:
            return {}
    if job.action == Action.WEBHOOK and isinstance(params.get("url"), str):
        parts = urlsplit(params["url"])
        return {"url": urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))}
    return {}


def job_finish(
    *, job: Job, result: ExecResult, started: float | None, probe: bool = False, limits: Limits | None = None
) -> RunOutcome:
    """Record the action's outcome in a new transaction; plan a retry or the next attempt."""
    limits = limits or safety.limits_from_settings()
    now = timezone.now()
    duration = round(started, 3) if started is not None else 0.0
    base = audit_base(job)
    stored = result_data(result)
    plan_next = False
    with transaction.atomic():
        current = Job.objects.select_for_update().get(pk=job.pk)
        # The lease ran out while the action ran (a stalled worker) and the job was marked unknown:
        # the real outcome is still recorded, but nothing is retried.
        late = current.state == Job.State.UNKNOWN and bool(job.lease_owner) and current.lease_owner == job.lease_owner
        if current.state != Job.State.RUNNING and not late:
            return RunOutcome(state=current.state, reason="lease lost")
        if late:
            stored["after_unknown"] = True
        outcome = outcome_data(job=job, result=result, duration=duration, late=late)
        if result.ok:
            verify = job.action != Action.LOG_ONLY
            job_end(
                job_id=job.pk,
                state=Job.State.OK,
                now=now,
                result=stored,
                verify_state=Job.Verify.PENDING if verify else Job.Verify.NONE,
                verify_deadline=now + timedelta(seconds=job.policy.verify_within_seconds if job.policy else 300)
                if verify
                else None,
            )
            audit_record(
                kind="action_ok",
                message=result.detail,
                data=outcome,
                **base,
            )
            if probe:
                safety.circuit_close(
                    actor=safety.SYSTEM_ACTOR, reason="the probe action after the cool-off succeeded", now=now
                )
            return RunOutcome(state=Job.State.OK)
        if result.transient and not late and current.attempts <= settings.AUTOHEAL_MAX_RETRIES:
            wait = min(limits.backoff_max_seconds, limits.backoff_base_seconds * 2 ** (current.attempts - 1))
            job_requeue(job_id=job.pk, not_before=now + timedelta(seconds=wait), result=stored, started_at=None)
            audit_record(
                kind="action_retry",
                message=f"{result.detail}; retrying in {wait}s",
                data={
                    "job": job.pk,
                    "action": job.action,
                    "error": result.detail,
                    "try": current.attempts,
                    "retry_in_seconds": wait,
                    **host_data(job),
                },
                **base,
            )
            return RunOutcome(state=Job.State.QUEUED, reason="retry")
        job_end(job_id=job.pk, state=Job.State.FAIL, now=now, result=stored)
        audit_record(
            kind="action_fail",
            message=result.detail,
            data={**outcome, "error": result.detail},
            **base,
        )
        if probe:
            safety.circuit_trip(reason="the probe action after the cool-off failed", now=now)
        elif is_destructive(job.action):
            trip_if_over(row=safety.switch_locked(), now=now, limits=limits, counting_start=False)
        # Only an action that really started counts: a target Docker could not even be asked about
        # is not re-attempted here (the breaker counts the failure).
        plan_next = is_destructive(job.action) and current.started_at is not None
    if plan_next:
        attempt_next(
            job=Job.objects.select_related("alert", "policy").get(pk=job.pk), why="the action failed", limits=limits
        )
    return RunOutcome(state=Job.State.FAIL)


def trip_if_over(*, row: Switch, now: datetime, limits: Limits, counting_start: bool) -> None:
    """Open the breaker as soon as a limit is reached, not only when the next job asks."""
    if row.circuit_open:
        return
    actions, failures = circuit_counts(row=row, now=now, limits=limits)
    if counting_start and actions >= limits.circuit_max_actions:
        safety.circuit_trip(
            reason=f"{actions} destructive actions in {limits.circuit_window_seconds}s reached the limit of {limits.circuit_max_actions}",
            now=now,
            data={"actions": actions, "failures": failures},
        )
    elif failures >= limits.circuit_max_failures:
        safety.circuit_trip(
            reason=f"{failures} failed actions in {limits.circuit_window_seconds}s reached the limit of {limits.circuit_max_failures}",
            now=now,
            data={"actions": actions, "failures": failures},
        )
