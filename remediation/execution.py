"""Execution services: claim a job, decide under the guards, run the action, finish, verify.

The worker calls these; each state change writes its audit event in the same transaction.

Concurrency: a job is claimed in a short transaction (``select_for_update(skip_locked=True)`` on
PostgreSQL, a conditional UPDATE that must touch one row elsewhere) and the claim commits before
anything else. The guards are decided again under the switch row's lock, and the action is marked
started in that same transaction, so two workers can never both spend the last unit of a budget or
of the circuit breaker. No lock is held while the action runs: the worker only renews its lease.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.services import audit_record
from remediation import safety
from remediation.decisions import (
    Decision,
    HistoryFacts,
    JobFacts,
    Limits,
    SwitchFacts,
    job_decide,
    next_attempt_decide,
)
from remediation.executors import DEFAULT_TIMEOUT, ExecResult, JobSpec, NotAllowed, executor_for, timeout_for
from remediation.models import DESTRUCTIVE_ACTIONS, Action, Alert, Job, Switch

logger = logging.getLogger(__name__)

# States of a job whose action really started (dry runs and skips never get here).
ACTED_STATES = (Job.State.RUNNING, Job.State.OK, Job.State.FAIL, Job.State.UNKNOWN)
HISTORY_WINDOW = timedelta(hours=2)
HISTORY_LIMIT = 200
VERIFY_BATCH = 50


def _destructive(action: str) -> bool:
    return action in DESTRUCTIVE_ACTIONS


def _audit_base(job: Job) -> dict[str, Any]:
    alert = job.alert
    return {
        "alertname": alert.alertname,
        "fingerprint": alert.fingerprint,
        "policy": job.policy_name,
        "target": job.target,
    }


# --- facts ------------------------------------------------------------------------------------


def switch_facts(row: Switch | None) -> SwitchFacts:
    """The switch layers as plain data (the environment floors come from settings)."""
    row = row or Switch()
    return SwitchFacts(
        env_enabled=bool(settings.AUTOHEAL_ENABLED),
        runtime_enabled=row.enabled,
        env_dry_run=bool(settings.AUTOHEAL_DRY_RUN),
        runtime_dry_run=row.dry_run,
        paused_until=row.paused_until,
        circuit_open=row.circuit_open,
        circuit_half_open=row.circuit_half_open,
    )


def target_history(*, target: str, now: datetime, exclude_job: int | None = None) -> list[datetime]:
    """Start times of real destructive actions on a target, recent first (bounded)."""
    query = Job.objects.filter(
        target=target,
        started_at__gt=now - HISTORY_WINDOW,
        started_at__lte=now,
        state__in=ACTED_STATES,
        action__in=DESTRUCTIVE_ACTIONS,
    )
    if exclude_job is not None:
        query = query.exclude(pk=exclude_job)
    times = query.order_by("-started_at").values_list("started_at", flat=True)[:HISTORY_LIMIT]
    return [t for t in times if t is not None]


def circuit_counts(*, row: Switch | None, now: datetime, limits: Limits) -> tuple[int, int]:
    """Destructive actions and failures the breaker counts: in its window, since its last reset."""
    since = now - timedelta(seconds=limits.circuit_window_seconds)
    if row is not None and row.circuit_reset_at is not None and row.circuit_reset_at > since:
        since = row.circuit_reset_at
    destructive = Job.objects.filter(action__in=DESTRUCTIVE_ACTIONS)
    actions = destructive.filter(started_at__gte=since, state__in=ACTED_STATES).count()
    failures = destructive.filter(finished_at__gte=since, state__in=(Job.State.FAIL, Job.State.UNKNOWN)).count()
    return actions, failures


def job_facts(job: Job, alert: Alert) -> JobFacts:
    """The job, its policy's current limits (or the defaults if the policy is gone), its incident."""
    policy = job.policy
    return JobFacts(
        destructive=_destructive(job.action),
        policy_dry_run=job.dry_run or bool(policy and policy.dry_run),
        attempt=job.attempt,
        incident_resolved=alert.status == Alert.Status.RESOLVED,
        incident_acked=alert.acked_at is not None,
        cooldown_seconds=policy.cooldown_seconds if policy else 300,
        max_actions_per_hour=policy.max_actions_per_hour if policy else 3,
    )


def job_decision(*, job: Job, alert: Alert, row: Switch | None, now: datetime, limits: Limits) -> Decision:
    """Read the facts for one job and apply the pure decision (no writes)."""
    actions, failures = circuit_counts(row=row, now=now, limits=limits)
    history = HistoryFacts(
        target_actions=target_history(target=job.target, now=now, exclude_job=job.pk),
        circuit_actions=actions,
        circuit_failures=failures,
    )
    return job_decide(job=job_facts(job, alert), switch=switch_facts(row), history=history, limits=limits, now=now)


def job_spec(job: Job) -> JobSpec:
    """What the executor sees."""
    return JobSpec(
        action=job.action,
        target=job.target,
        params=dict(job.params or {}),
        labels={str(k): str(v) for k, v in (job.alert.labels or {}).items()},
        alertname=job.alert.alertname,
        fingerprint=job.alert.fingerprint,
        job_id=job.pk,
    )


# --- claim ------------------------------------------------------------------------------------


def job_claim(*, worker: str, now: datetime | None = None) -> Job | None:
    """Take one due queued job for this worker, or None. Two workers never get the same job."""
    now = now or timezone.now()
    lease = now + timedelta(seconds=settings.AUTOHEAL_LEASE_SECONDS)
    due = Job.objects.filter(state=Job.State.QUEUED, not_before__lte=now).order_by("not_before", "id")
    if connection.vendor == "postgresql":
        with transaction.atomic():
            job = due.select_for_update(skip_locked=True, of=("self",)).first()
            if job is None:
                return None
            job.state = Job.State.RUNNING
            job.lease_owner = worker[:100]
            job.lease_expires_at = lease
            job.attempts += 1
            job.save(update_fields=["state", "lease_owner", "lease_expires_at", "attempts"])
    else:
        claimed_pk = None
        for candidate in due.values_list("pk", flat=True)[:5]:
            # The WHERE state='queued' makes the UPDATE the arbiter: only one worker can flip it.
            claimed = Job.objects.filter(pk=candidate, state=Job.State.QUEUED).update(
                state=Job.State.RUNNING, lease_owner=worker[:100], lease_expires_at=lease, attempts=F("attempts") + 1
            )
            if claimed == 1:
                claimed_pk = candidate
                break
        if claimed_pk is None:
            return None
        job = Job.objects.get(pk=claimed_pk)
    return Job.objects.select_related("alert", "policy").get(pk=job.pk)


# --- run --------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What happened to a claimed job (for logs and tests)."""

    state: str
    reason: str = ""


def job_run(*, job: Job, worker: str, limits: Limits | None = None) -> RunOutcome:
    """Decide, check, start, execute and finish one claimed job."""
    limits = limits or safety.limits_from_settings()
    now = timezone.now()
    # First pass without locks, so a disabled or resolved job never causes a Docker call.
    decision = job_decision(job=job, alert=job.alert, row=Switch.objects.filter(pk=1).first(), now=now, limits=limits)
    if decision.verdict in ("skip", "delay"):
        return _settle(job=job, decision=decision, limits=limits)
    spec = job_spec(job)
    try:
        executor = executor_for(job.action)
        executor.check(spec)
        timeout = timeout_for(spec, default=getattr(executor, "DEFAULT_TIMEOUT", DEFAULT_TIMEOUT))
    except NotAllowed as exc:
        return _settle(job=job, decision=Decision("skip", "not_allowed", str(exc)), limits=limits)
    except Exception as exc:
        logger.warning("job %s: check failed: %s", job.pk, type(exc).__name__)
        return _finish(
            job=job, result=ExecResult(ok=False, transient=True, detail=f"check failed: {exc}"), started=None
        )

    with transaction.atomic():
        row = safety.switch_locked()
        now = timezone.now()
        current = Job.objects.select_related("alert", "policy").get(pk=job.pk)
        if current.state != Job.State.RUNNING or current.lease_owner != worker[:100]:
            return RunOutcome(state=current.state, reason="lease lost before start")
        decision = job_decision(job=current, alert=current.alert, row=row, now=now, limits=limits)
        if decision.verdict != "run":
            return _settle(job=current, decision=decision, limits=limits)
        current.started_at = now
        current.lease_expires_at = now + timedelta(seconds=settings.AUTOHEAL_LEASE_SECONDS)
        current.save(update_fields=["started_at", "lease_expires_at"])
        audit_record(
            kind="action_started",
            message=f"{job.action} {job.target}".strip(),
            data={
                "job": job.pk,
                "action": job.action,
                "attempt": job.attempt,
                "try": current.attempts,
                "probe": decision.probe,
            },
            **_audit_base(current),
        )
        if _destructive(job.action) and not decision.probe:
            _trip_if_over(row=row, now=now, limits=limits, counting_start=True)
    job = current

    heartbeat = _Heartbeat(job_id=job.pk, worker=worker)
    heartbeat.start()
    started = time.monotonic()
    try:
        result = executor.execute(spec, timeout=timeout)
    except NotAllowed as exc:
        result = ExecResult(ok=False, detail=f"refused at execution time: {exc}")
    except Exception as exc:
        logger.exception("job %s: executor raised", job.pk)
        result = ExecResult(ok=False, detail=f"executor error: {type(exc).__name__}: {exc}")
    finally:
        heartbeat.stop()
    return _finish(job=job, result=result, started=time.monotonic() - started, probe=decision.probe, limits=limits)


def _settle(*, job: Job, decision: Decision, limits: Limits) -> RunOutcome:
    """A job that does not run: skipped, delayed, or recorded as a dry run."""
    now = timezone.now()
    with transaction.atomic():
        if decision.trip_circuit:
            safety.circuit_trip(reason=decision.message, now=now)
        base = _audit_base(job)
        if decision.verdict == "delay" and decision.until is not None:
            Job.objects.filter(pk=job.pk).update(
                state=Job.State.QUEUED, not_before=decision.until, lease_owner="", lease_expires_at=None
            )
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
        reason = "dry_run" if decision.verdict == "dry_run" else decision.reason
        Job.objects.filter(pk=job.pk).update(
            state=Job.State.SKIPPED,
            skip_reason=reason,
            finished_at=now,
            lease_owner="",
            lease_expires_at=None,
            result={"decision": decision.verdict, "reason": reason, "message": decision.message},
        )
        if decision.verdict == "dry_run":
            audit_record(
                kind="action_dry_run",
                message=f"would {job.action} {job.target}: {decision.message}",
                data={"job": job.pk, "action": job.action, "attempt": job.attempt, **_would_run(job)},
                **base,
            )
        else:
            audit_record(
                kind="action_skipped",
                message=decision.message,
                data={"job": job.pk, "action": job.action, "attempt": job.attempt, "reason": reason},
                **base,
            )
    return RunOutcome(state=Job.State.SKIPPED, reason=reason)


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


def _finish(
    *, job: Job, result: ExecResult, started: float | None, probe: bool = False, limits: Limits | None = None
) -> RunOutcome:
    """Record the action's outcome in a new transaction; plan a retry or the next attempt."""
    limits = limits or safety.limits_from_settings()
    now = timezone.now()
    duration = round(started, 3) if started is not None else 0.0
    base = _audit_base(job)
    result_data = {"ok": result.ok, "detail": result.detail, "output": result.output}
    plan_next = False
    with transaction.atomic():
        current = Job.objects.select_for_update().get(pk=job.pk)
        # The lease ran out while the action ran (a stalled worker) and the job was marked unknown:
        # the real outcome is still recorded, but nothing is retried.
        late = current.state == Job.State.UNKNOWN and bool(job.lease_owner) and current.lease_owner == job.lease_owner
        if current.state != Job.State.RUNNING and not late:
            return RunOutcome(state=current.state, reason="lease lost")
        if late:
            result_data["after_unknown"] = True
        if result.ok:
            verify = job.action != Action.LOG_ONLY
            Job.objects.filter(pk=job.pk).update(
                state=Job.State.OK,
                finished_at=now,
                result=result_data,
                lease_owner="",
                lease_expires_at=None,
                verify_state=Job.Verify.PENDING if verify else Job.Verify.NONE,
                verify_deadline=now + timedelta(seconds=job.policy.verify_within_seconds if job.policy else 300)
                if verify
                else None,
            )
            audit_record(
                kind="action_ok",
                message=result.detail,
                data={
                    "job": job.pk,
                    "action": job.action,
                    "attempt": job.attempt,
                    "duration_seconds": duration,
                    "output": result.output,
                    **({"after_unknown": True} if late else {}),
                },
                **base,
            )
            if probe:
                safety.circuit_close(
                    actor=safety.SYSTEM_ACTOR, reason="the probe action after the cool-off succeeded", now=now
                )
            return RunOutcome(state=Job.State.OK)
        if result.transient and not late and current.attempts <= settings.AUTOHEAL_MAX_RETRIES:
            wait = min(limits.backoff_max_seconds, limits.backoff_base_seconds * 2 ** (current.attempts - 1))
            Job.objects.filter(pk=job.pk).update(
                state=Job.State.QUEUED,
                not_before=now + timedelta(seconds=wait),
                result=result_data,
                lease_owner="",
                lease_expires_at=None,
                started_at=None,
            )
            audit_record(
                kind="action_retry",
                message=f"{result.detail}; retrying in {wait}s",
                data={
                    "job": job.pk,
                    "action": job.action,
                    "error": result.detail,
                    "try": current.attempts,
                    "retry_in_seconds": wait,
                },
                **base,
            )
            return RunOutcome(state=Job.State.QUEUED, reason="retry")
        Job.objects.filter(pk=job.pk).update(
            state=Job.State.FAIL,
            finished_at=now,
            result=result_data,
            lease_owner="",
            lease_expires_at=None,
            started_at=current.started_at,
        )
        audit_record(
            kind="action_fail",
            message=result.detail,
            data={
                "job": job.pk,
                "action": job.action,
                "attempt": job.attempt,
                "duration_seconds": duration,
                "error": result.detail,
                "output": result.output,
                **({"after_unknown": True} if late else {}),
            },
            **base,
        )
        if probe:
            safety.circuit_trip(reason="the probe action after the cool-off failed", now=now)
        elif _destructive(job.action):
            _trip_if_over(row=safety.switch_locked(), now=now, limits=limits, counting_start=False)
        # Only an action that really started counts: a target Docker could not even be asked about
        # is not re-attempted here (the breaker counts the failure).
        plan_next = _destructive(job.action) and current.started_at is not None
    if plan_next:
        attempt_next(
            job=Job.objects.select_related("alert", "policy").get(pk=job.pk), why="the action failed", limits=limits
        )
    return RunOutcome(state=Job.State.FAIL)


def _trip_if_over(*, row: Switch, now: datetime, limits: Limits, counting_start: bool) -> None:
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


class _Heartbeat:
    """Renews the job's lease while its action runs, on its own database connection."""

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
                    Job.objects.filter(pk=self.job_id, state=Job.State.RUNNING, lease_owner=self.worker).update(
                        lease_expires_at=timezone.now() + timedelta(seconds=settings.AUTOHEAL_LEASE_SECONDS)
                    )
                except Exception:
                    logger.warning("could not renew the lease of job %s", self.job_id)
        finally:
            thread_connection.close()


# --- leases -----------------------------------------------------------------------------------


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
            base = _audit_base(job)
            if job.started_at is None:
                Job.objects.filter(pk=job.pk).update(state=Job.State.QUEUED, lease_owner="", lease_expires_at=None)
                audit_record(
                    kind="action_retry",
                    message="the worker stopped before the action started; queued again",
                    data={
                        "job": job.pk,
                        "action": job.action,
                        "error": "worker lost before start",
                        "try": job.attempts,
                        "retry_in_seconds": 0,
                    },
                    **base,
                )
            else:
                Job.objects.filter(pk=job.pk).update(state=Job.State.UNKNOWN, finished_at=now, lease_expires_at=None)
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
                    },
                    **base,
                )
            done += 1
    return done


# --- verification -----------------------------------------------------------------------------


def time_to_remediate(alert: Alert) -> float | None:
    """Alert start to resolution, in seconds (Alertmanager's endsAt when it has one)."""
    end = alert.ends_at if alert.ends_at and alert.ends_at >= alert.starts_at else alert.resolved_at
    if end is None:
        return None
    return round(max(0.0, (end - alert.starts_at).total_seconds()), 3)


def jobs_verify(*, now: datetime | None = None, limits: Limits | None = None) -> int:
    """Close the loop: resolved in time -> verified; deadline passed -> ineffective (then retry or escalate)."""
    now = now or timezone.now()
    done = 0
    pending = Job.objects.filter(verify_state=Job.Verify.PENDING).filter(
        Q(alert__status=Alert.Status.RESOLVED) | Q(verify_deadline__lt=now)
    )
    for job_id in list(pending.order_by("verify_deadline").values_list("pk", flat=True)[:VERIFY_BATCH]):
        follow_up = None
        with transaction.atomic():
            locked = (
                Job.objects.select_for_update(skip_locked=True, of=("self",))
                if connection.vendor == "postgresql"
                else Job.objects.select_for_update()
            )
            job = locked.filter(pk=job_id, verify_state=Job.Verify.PENDING).select_related("alert", "policy").first()
            if job is None:
                continue
            alert = job.alert
            base = _audit_base(job)
            if alert.status == Alert.Status.RESOLVED:
                ttr = time_to_remediate(alert)
                Job.objects.filter(pk=job.pk).update(verify_state=Job.Verify.VERIFIED)
                audit_record(
                    kind="action_verified",
                    message=f"the alert resolved after the action ({ttr}s from alert start)",
                    data={
                        "job": job.pk,
                        "action": job.action,
                        "attempt": job.attempt,
                        "time_to_remediate_seconds": ttr,
                    },
                    **base,
                )
            elif job.verify_deadline is not None and job.verify_deadline < now:
                Job.objects.filter(pk=job.pk).update(verify_state=Job.Verify.INEFFECTIVE)
                audit_record(
                    kind="action_ineffective",
                    message="the alert still fires after the verification window",
                    data={
                        "job": job.pk,
                        "action": job.action,
                        "attempt": job.attempt,
                        "verify_within_seconds": job.policy.verify_within_seconds if job.policy else None,
                    },
                    **base,
                )
                follow_up = job
            done += 1
        if follow_up is not None and _destructive(follow_up.action):
            attempt_next(job=follow_up, why="the last action was ineffective", limits=limits)
    return done


def attempt_next(*, job: Job, why: str, limits: Limits | None = None, now: datetime | None = None) -> Job | None:
    """The incident still fires after an attempt: queue the next one after the backoff, or escalate."""
    limits = limits or safety.limits_from_settings()
    now = now or timezone.now()
    policy = job.policy
    if policy is None or not policy.enabled:
        return None
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=job.alert_id)
        if alert.status != Alert.Status.FIRING or alert.acked_at is not None or alert.escalated_at is not None:
            return None
        if Job.objects.filter(policy=policy, alert=alert, attempt__gt=job.attempt).exists():
            return None
        plan = next_attempt_decide(
            target_actions=target_history(target=job.target, now=now),
            max_actions_per_hour=policy.max_actions_per_hour,
            limits=limits,
            now=now,
        )
        if plan.escalate:
            safety.incident_escalate(alert=alert, job=job, reason=f"{why}; {plan.message}", now=now)
            return None
        try:
            with transaction.atomic():
                nxt = Job.objects.create(
                    policy=policy,
                    policy_name=job.policy_name,
                    alert=alert,
                    action=job.action,
                    target=job.target,
                    params=job.params,
                    dry_run=job.dry_run,
                    attempt=job.attempt + 1,
                    not_before=plan.not_before or now,
                    queued_at=now,
                )
        except IntegrityError:
            return None
        audit_record(
            kind="action_queued",
            alertname=alert.alertname,
            fingerprint=alert.fingerprint,
            policy=job.policy_name,
            target=job.target,
            message=f"{why}; {plan.message}",
            data={
                "job": nxt.pk,
                "attempt": nxt.attempt,
                "reason": "reattempt",
                "not_before": nxt.not_before.isoformat(),
            },
        )
        from remediation.wakeup import notify_jobs

        transaction.on_commit(notify_jobs)
    return nxt
