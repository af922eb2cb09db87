"""Closing the loop after an action: verified when the alert resolves in time, else ineffective.

An ineffective or failed destructive action leads to the next attempt after the backoff, or to an
escalation when the incident's budget is spent.
"""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import audit_record
from remediation import safety
from remediation.decisions import Limits, next_attempt_decide
from remediation.execution.facts import audit_base, is_destructive, target_history
from remediation.models import Alert, Job

VERIFY_BATCH = 50


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
            base = audit_base(job)
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
        if follow_up is not None and is_destructive(follow_up.action):
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
            target_actions=target_history(target=job.target, now=now, host=job.host),
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
                    host=job.host,
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
