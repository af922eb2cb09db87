"""Writes made from the Command Center that belong to no other service."""

from __future__ import annotations

from django.db import transaction

from audit.services import audit_record
from dashboard.selectors import ACTED_STATES
from remediation.models import Job


class MarkError(ValueError):
    """A false-positive verdict that cannot be recorded (the job is missing or never acted)."""


def job_mark_false_positive(*, job_id: int, value: bool, actor: str) -> Job:
    """An operator says whether an action was needed (``value=False``) or a false positive (``True``).

    Only actions that really ran can be judged: a dry run or a skipped job changed nothing. The
    verdict and its audit event (``false_positive_marked``) are written in one transaction; setting
    the verdict it already has changes nothing and writes no event.
    """
    if not isinstance(value, bool):
        raise MarkError("false_positive must be true or false")
    with transaction.atomic():
        job = Job.objects.select_for_update().select_related("alert").filter(pk=job_id).first()
        if job is None:
            raise MarkError(f"there is no action {job_id}")
        if job.dry_run or job.state not in ACTED_STATES:
            raise MarkError(
                f"action {job_id} did not run ({job.state}{', dry run' if job.dry_run else ''}): nothing to judge"
            )
        if job.false_positive is value:
            return job
        before = job.false_positive
        job.false_positive = value
        job.save(update_fields=["false_positive"])
        verdict = "a false positive" if value else "needed"
        audit_record(
            kind="false_positive_marked",
            actor=actor,
            alertname=job.alert.alertname,
            fingerprint=job.alert.fingerprint,
            policy=job.policy_name,
            target=job.target,
            message=f"action {job.pk} ({job.action} {job.target}) marked {verdict}",
            data={"job": job.pk, "false_positive": value, "before": before, "action": job.action},
        )
    return job
