"""Plain data read from the rows: the facts the guards decide on and what the executor sees.

The decision itself is pure (:mod:`remediation.decisions`); these functions read the job, its
policy and incident, the switch and the recent action history, and hand them over as values.
:func:`job_decision` only reads, so it can run both before and under the switch row's lock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from remediation.decisions import Decision, HistoryFacts, JobFacts, Limits, SwitchFacts, job_decide
from remediation.executors import JobSpec
from remediation.models import DESTRUCTIVE_ACTIONS, Alert, Job, Switch
from remediation.planning import policy_limits

# States of a job whose action really started (dry runs and skips never get here).
ACTED_STATES = (Job.State.RUNNING, Job.State.OK, Job.State.FAIL, Job.State.UNKNOWN)
HISTORY_WINDOW = timedelta(hours=2)
HISTORY_LIMIT = 200


def is_destructive(action: str) -> bool:
    return action in DESTRUCTIVE_ACTIONS


def host_data(job: Job) -> dict[str, str]:
    """``data.host`` of a job's audit events when an agent's host runs it (fleet placement)."""
    return {"host": job.host} if job.host else {}


def audit_base(job: Job) -> dict[str, Any]:
    alert = job.alert
    return {
        "alertname": alert.alertname,
        "fingerprint": alert.fingerprint,
        "policy": job.policy_name,
        "target": job.target,
    }


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


def target_history(*, target: str, now: datetime, exclude_job: int | None = None, host: str = "") -> list[datetime]:
    """Start times of real destructive actions on a target of one host, recent first (bounded)."""
    query = Job.objects.filter(
        target=target,
        host=host,
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
    # Only failures of actions that ran: a target Docker could not be asked about is no evidence
    # that remediation is doing harm.
    failures = destructive.filter(
        finished_at__gte=since, state__in=(Job.State.FAIL, Job.State.UNKNOWN), started_at__isnull=False
    ).count()
    return actions, failures


def job_facts(job: Job, alert: Alert) -> JobFacts:
    """The job, its policy's current limits (or the defaults if the policy is gone), its incident."""
    policy = job.policy
    cooldown_seconds, max_actions_per_hour = policy_limits(policy)
    return JobFacts(
        destructive=is_destructive(job.action),
        policy_dry_run=job.dry_run or bool(policy and policy.dry_run),
        attempt=job.attempt,
        incident_resolved=alert.status == Alert.Status.RESOLVED,
        incident_acked=alert.acked_at is not None,
        cooldown_seconds=cooldown_seconds,
        max_actions_per_hour=max_actions_per_hour,
    )


def job_decision(*, job: Job, alert: Alert, row: Switch | None, now: datetime, limits: Limits) -> Decision:
    """Read the facts for one job and apply the pure decision (no writes).

    The action history (three queries) is read only when the decision can use it: for a
    destructive action while the breaker is not plainly open. A storm of jobs that the open breaker
    skips, or of log-only jobs, then costs no history reads at all.
    """
    switch = switch_facts(row)
    needs_history = is_destructive(job.action) and not (switch.circuit_open and not switch.circuit_half_open)
    if needs_history:
        actions, failures = circuit_counts(row=row, now=now, limits=limits)
        history = HistoryFacts(
            target_actions=target_history(target=job.target, now=now, exclude_job=job.pk, host=job.host),
            circuit_actions=actions,
            circuit_failures=failures,
        )
    else:
        history = HistoryFacts(target_actions=[], circuit_actions=0, circuit_failures=0)
    return job_decide(job=job_facts(job, alert), switch=switch, history=history, limits=limits, now=now)


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
