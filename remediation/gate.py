"""The people-in-the-loop gate a claimed job passes before its action: silences, then approval.

1. With ``AUTOHEAL_ALERTMANAGER_URL`` set, an active silence (not Autoheal's own) matching the
   alert's labels skips the job with reason ``silenced``. When no Alertmanager answers, the
   policy's ``when_silence_unknown`` decides (``act`` or skip with ``silence_unknown``), and
   ``silence_unknown`` records which.
2. An approve-mode policy's job waits as ``awaiting_approval`` until a person decides.
3. With ``silence_during_action``, a silence for the alert's labels is created for the action
   plus its verification window; :func:`silence_sweep_one` expires it as soon as the job is done.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import audit_record
from remediation import silences
from remediation.approvals import approval_request
from remediation.decisions import Decision, Limits
from remediation.execution.facts import audit_base, job_spec
from remediation.execution.outcome import RunOutcome, job_settle
from remediation.executors import DEFAULT_TIMEOUT, NotAllowed, timeout_for
from remediation.models import ActionSilence, Job, Mode, SilenceUnknown

logger = logging.getLogger(__name__)


def job_gate(*, job: Job, limits: Limits, now: datetime | None = None) -> RunOutcome | None:
    """None when the job may go on to its action; otherwise what happened to it instead."""
    now = now or timezone.now()
    policy = job.policy
    labels = {str(k): str(v) for k, v in (job.alert.labels or {}).items()}
    if silences.configured():
        try:
            silence = silences.silence_matching(labels)
        except silences.AlertmanagerUnavailable as exc:
            choice = policy.when_silence_unknown if policy else SilenceUnknown.ACT
            audit_record(
                kind="silence_unknown",
                message=f"cannot tell whether the alert is silenced; the policy says {choice}",
                data={"job": job.pk, "decision": choice, "error": str(exc)},
                **audit_base(job),
            )
            if choice == SilenceUnknown.SKIP:
                return job_settle(
                    job=job,
                    decision=Decision("skip", "silence_unknown", f"no Alertmanager answered: {exc}"),
                    limits=limits,
                )
        else:
            if silence is not None:
                return job_settle(
                    job=job,
                    decision=Decision("skip", "silenced", f"silenced by {silence.created_by}: {silence.comment}"),
                    limits=limits,
                    extra={"silence": silence.as_data()},
                )
    if policy is not None and policy.mode == Mode.APPROVE and job.approved_at is None:
        return approval_request(job=job, now=now)
    if policy is not None and policy.silence_during_action and silences.configured():
        _silence_for_action(job=job, labels=labels, now=now)
    return None


def _silence_for_action(*, job: Job, labels: dict[str, str], now: datetime) -> None:
    """Silence the alert for the action plus its verification window, so on-call is not paged."""
    try:
        action_seconds = timeout_for(job_spec(job), default=DEFAULT_TIMEOUT)
    except NotAllowed:
        action_seconds = DEFAULT_TIMEOUT
    stop = job.params.get("stop_timeout_seconds", 10) if isinstance(job.params, dict) else 10
    verify = job.policy.verify_within_seconds if job.policy else 300
    ends = now + timedelta(seconds=float(action_seconds) + float(stop if isinstance(stop, int) else 10) + verify)
    comment = f"{silences.comment_prefix(job.pk)} {job.action} {job.target} (policy {job.policy_name}), until verified"
    # The row comes first: a crash between it and Alertmanager's answer leaves a row without an
    # id, which the sweeper resolves by the comment; never a silence nobody knows about.
    row = ActionSilence.objects.create(job=job, silence_id="", alertmanager="", ends_at=ends, created_at=now)
    try:
        url, silence_id = silences.silence_create(labels=labels, starts_at=now, ends_at=ends, comment=comment)
    except silences.AlertmanagerUnavailable as exc:
        row.delete()
        audit_record(
            kind="silence_unknown",
            message="could not silence the alert during the action; acting anyway",
            data={"job": job.pk, "decision": "act", "purpose": "silence_during_action", "error": str(exc)},
            **audit_base(job),
        )
        return
    with transaction.atomic():
        ActionSilence.objects.filter(pk=row.pk).update(silence_id=silence_id, alertmanager=url)
        audit_record(
            kind="silence_created",
            message=f"silenced the alert during the action until {ends.isoformat()}",
            data={
                "job": job.pk,
                "silence": {
                    "id": silence_id,
                    "created_by": silences.CREATED_BY,
                    "comment": comment,
                    "ends_at": ends.isoformat(),
                },
            },
            **audit_base(job),
        )


def _done() -> Q:
    """A job whose silence is no longer needed: verified, ineffective, failed, escalated or over."""
    return (
        Q(job__state__in=(Job.State.FAIL, Job.State.SKIPPED, Job.State.UNKNOWN))
        | Q(job__verify_state__in=(Job.Verify.VERIFIED, Job.Verify.INEFFECTIVE))
        | Q(job__state=Job.State.OK, job__verify_state=Job.Verify.NONE)
        | Q(job__alert__escalated_at__isnull=False)
    )


def silence_sweep_one(*, now: datetime | None = None) -> bool:
    """Expire one of Autoheal's silences whose job is done (or that a crash left past its end)."""
    if not silences.configured():
        return False
    now = now or timezone.now()
    with transaction.atomic():
        rows = ActionSilence.objects.filter(expired_at__isnull=True).filter(_done() | Q(ends_at__lt=now))
        if connection.vendor == "postgresql":
            rows = rows.select_for_update(skip_locked=True, of=("self",))
        row = rows.select_related("job", "job__alert").order_by("created_at").first()
        if row is None:
            return False
        try:
            ids = [row.silence_id] if row.silence_id else silences.own_silence_ids(job_id=row.job_id)
            expired = all(silences.silence_expire(silence_id=i, prefer=row.alertmanager) for i in ids)
        except silences.AlertmanagerUnavailable as exc:
            logger.warning("silence of job %s: cannot expire it now: %s", row.job_id, exc)
            return False
        if not expired:
            return False
        job = row.job
        ActionSilence.objects.filter(pk=row.pk).update(expired_at=now)
        audit_record(
            kind="silence_expired",
            message=f"expired the silence of job {job.pk} ({job.state}{', ' + job.verify_state if job.verify_state else ''})",
            data={
                "job": job.pk,
                "silence": {"id": row.silence_id or ",".join(ids)},
                "job_state": job.state,
                "verify_state": job.verify_state,
            },
            **audit_base(job),
        )
    return True
