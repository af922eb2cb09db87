"""``/ops/`` pieces for people in the loop: approve or deny waiting jobs, evidence, test notification.

Plain form posts (CSRF-protected) answered with a redirect back to ``/ops/``; a refused one
re-renders the page with the reason. Approving and denying need the admin role (see
:mod:`remediation.approvals`), and always a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from audit.models import AuditEvent
from dashboard import ops
from notifications.outbox import notification_test
from notifications.targets import NotifyConfigError, configured_targets
from remediation.approvals import ApprovalError, job_approve, job_deny
from remediation.models import Alert, Job

WAITING_SHOWN = 50
EVIDENCE_SHOWN = 20


@dataclass(frozen=True)
class PeopleOverview:
    """What the people-in-the-loop panels show."""

    waiting: list[Job]
    evidence: list[AuditEvent]
    targets: list[str]
    targets_error: str


def people_overview() -> PeopleOverview:
    """Jobs awaiting approval (oldest first), the evidence of open incidents, the notify targets."""
    waiting = list(
        Job.objects.filter(state=Job.State.AWAITING_APPROVAL)
        .select_related("alert")
        .order_by("queued_at", "id")[:WAITING_SHOWN]
    )
    fingerprints = Alert.objects.filter(status=Alert.Status.FIRING).values("fingerprint")
    evidence = list(
        AuditEvent.objects.filter(kind="evidence_captured", fingerprint__in=fingerprints).order_by("-id")[
            :EVIDENCE_SHOWN
        ]
    )
    try:
        targets, error = [t.name for t in configured_targets()], ""
    except NotifyConfigError as exc:
        targets, error = [], str(exc)
    return PeopleOverview(waiting=waiting, evidence=evidence, targets=targets, targets_error=error)


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("deny", "Deny")])
    reason = forms.CharField(
        max_length=1000, strip=True, error_messages={"required": "Give a reason for approving or denying."}
    )


@require_POST
def job_decide(request: HttpRequest, job_id: int) -> HttpResponse:
    """``POST /ops/jobs/<id>/decide``: approve or deny a waiting job, with a reason (admin)."""
    refused = ops._allowed(request, admin=True)
    if refused:
        return refused
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return ops._page(request, error=ops._first_error(form), status=400)
    decide: Any = job_approve if form.cleaned_data["decision"] == "approve" else job_deny
    try:
        result = decide(job_id=job_id, actor=ops._actor(request), reason=form.cleaned_data["reason"])
    except ApprovalError as exc:
        return ops._page(request, error=str(exc), status=exc.status)
    if result.state == Job.State.QUEUED:
        messages.success(request, f"Job {job_id} approved: it is queued to run.")
    else:
        messages.warning(request, f"Job {job_id} will not run: {result.job.skip_reason}.")
    return HttpResponseRedirect(reverse("ops"))


@require_POST
def notify_test(request: HttpRequest) -> HttpResponse:
    """``POST /ops/notify-test``: queue a test message for every configured target (admin)."""
    refused = ops._allowed(request, admin=True)
    if refused:
        return refused
    try:
        count = notification_test(actor=ops._actor(request))
    except NotifyConfigError as exc:
        return ops._page(request, error=str(exc), status=400)
    if count:
        messages.success(request, f"A test notification is queued for {count} target(s); see the audit trail.")
    else:
        messages.warning(request, "No notification target is configured (AUTOHEAL_NOTIFY_URLS).")
    return HttpResponseRedirect(reverse("ops"))
