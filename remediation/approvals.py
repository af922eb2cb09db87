"""People in the loop: approve-mode jobs wait for a person, who approves or denies with a reason.

Who decides: the ``admin`` role. An approval lets a destructive action run, which is the same power
as switching Autoheal back on, so it belongs to the role that holds the kill switch; ``ops`` sees
the waiting jobs on ``/ops/`` but cannot release them.

Every guard (kill switch, pause, circuit breaker, budget, cooldown, resolved, acked) is decided
again at approval, and once more when the worker claims the approved job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from fleet.placement import local_hosts
from remediation import safety
from remediation.decisions import Decision, Limits
from remediation.evidence import evidence_before_approval
from remediation.execution.facts import audit_base, job_decision, job_spec
from remediation.execution.outcome import RunOutcome, job_settle
from remediation.models import Job

REASON_MAX = 1000


class ApprovalError(ValueError):
    """The approval or denial cannot be done; ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, *, status: int = 400, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass(frozen=True)
class ApprovalResult:
    """The job after the decision: queued to run, or skipped (with the reason)."""

    job: Job
    state: str
    reason: str = ""


def job_link(job: Job) -> str:
    """Where a person decides: the job on /ops/ (after login). Never a link that acts on GET."""
    return f"{settings.AUTOHEAL_PUBLIC_URL.rstrip('/')}/ops/#job-{job.pk}"


def approval_request(*, job: Job, now: datetime | None = None) -> RunOutcome:
    """Park a claimed approve-mode job until a person decides or the policy's timeout passes."""
    now = now or timezone.now()
    timeout = job.policy.approval_timeout_seconds if job.policy else 900
    expires = now + timedelta(seconds=timeout)
    with transaction.atomic():
        Job.objects.filter(pk=job.pk).update(
            state=Job.State.AWAITING_APPROVAL, lease_owner="", lease_expires_at=None, approval_expires_at=expires
        )
        audit_record(
            kind="approval_requested",
            message=f"{job.action} {job.target} waits for approval until {expires:%Y-%m-%d %H:%M:%S} UTC".replace(
                "  ", " "
            ),
            data={
                "job": job.pk,
                "action": job.action,
                "attempt": job.attempt,
                "expires_at": expires.isoformat(),
                "link": job_link(job),
            },
            **audit_base(job),
        )
    if job.host in local_hosts():
        # A job placed on an agent's host: this engine is not that host's, so nothing is read
        # here; the agent reads the evidence before the action once the job is approved.
        evidence_before_approval(job_spec(job))
    return RunOutcome(state=Job.State.AWAITING_APPROVAL, reason="approval_requested")


def _clean_reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise ApprovalError("reason: a reason is required", field="reason")
    if len(reason) > REASON_MAX:
        raise ApprovalError(f"reason: at most {REASON_MAX} characters", field="reason")
    return reason.strip()


def _waiting(job_id: int) -> Job:
    job = Job.objects.select_for_update(of=("self",)).select_related("alert", "policy").filter(pk=job_id).first()
    if job is None:
        raise ApprovalError(f"no job {job_id}", status=404)
    if job.state != Job.State.AWAITING_APPROVAL:
        raise ApprovalError(f"job {job_id} is not awaiting approval (it is {job.state})", status=409)
    return job


def job_approve(*, job_id: int, actor: str, reason: object, limits: Limits | None = None) -> ApprovalResult:
    """Approve a waiting job: the guards are decided again now; it runs only if they still allow it."""
    text = _clean_reason(reason)
    limits = limits or safety.limits_from_settings()
    with transaction.atomic():
        job = _waiting(job_id)
        now = timezone.now()
        Job.objects.filter(pk=job.pk).update(approved_by=actor[:150], approved_at=now, approval_reason=text)
        audit_record(
            kind="approval_granted",
            actor=actor,
            message=f"approved: {text}",
            data={"job": job.pk, "action": job.action, "attempt": job.attempt, "reason": text},
            **audit_base(job),
        )
        decision = job_decision(job=job, alert=job.alert, row=safety.switch_locked(), now=now, limits=limits)
        if decision.verdict == "skip":
            outcome = job_settle(job=job, decision=decision, limits=limits)
            return ApprovalResult(job=_reload(job), state=outcome.state, reason=outcome.reason)
        not_before = decision.until if decision.verdict == "delay" and decision.until else now
        Job.objects.filter(pk=job.pk).update(state=Job.State.QUEUED, not_before=not_before)
        from remediation.wakeup import notify_jobs

        transaction.on_commit(notify_jobs)
    return ApprovalResult(job=_reload(job), state=Job.State.QUEUED)


def job_deny(*, job_id: int, actor: str, reason: object, limits: Limits | None = None) -> ApprovalResult:
    """Deny a waiting job: it ends skipped with reason ``approval_denied``."""
    text = _clean_reason(reason)
    limits = limits or safety.limits_from_settings()
    with transaction.atomic():
        job = _waiting(job_id)
        audit_record(
            kind="approval_denied",
            actor=actor,
            message=f"denied: {text}",
            data={"job": job.pk, "action": job.action, "attempt": job.attempt, "reason": text},
            **audit_base(job),
        )
        job_settle(job=job, decision=Decision("skip", "approval_denied", f"denied by {actor}: {text}"), limits=limits)
    return ApprovalResult(job=_reload(job), state=Job.State.SKIPPED, reason="approval_denied")


def approval_expire_one(*, now: datetime | None = None, limits: Limits | None = None) -> bool:
    """Skip one waiting job whose approval timeout passed (reason ``approval_expired``)."""
    now = now or timezone.now()
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("alert", "policy")
            .filter(state=Job.State.AWAITING_APPROVAL, approval_expires_at__lt=now)
            .order_by("approval_expires_at")
            .first()
        )
        if job is None:
            return False
        job_settle(
            job=job,
            decision=Decision("skip", "approval_expired", "nobody approved or denied it in time"),
            limits=limits or safety.limits_from_settings(),
        )
    return True


def _reload(job: Job) -> Job:
    return Job.objects.select_related("alert", "policy").get(pk=job.pk)
