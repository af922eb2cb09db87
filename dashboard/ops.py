"""``/ops/``: the Command Center. Views parse the form, call a service or selector, and render.

Changes are plain HTML form posts (CSRF-protected, same origin) answered with a redirect back to
the page; a refused change re-renders the page with the reason and status 400 or 404.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts.roles import is_admin, is_ops
from audit.streams.frames import StreamFilter
from audit.streams.storage import stream_backlog
from dashboard.selectors import ops_overview
from dashboard.services import MarkError, job_mark_false_positive
from remediation import safety
from remediation.selectors import switch_effective, switch_row

# Events rendered with the page's live stream before the first one arrives.
STREAM_BACKLOG = 30
GRAFANA_DASHBOARD_PATH = "/d/autoheal"

SWITCH_CHANGES: dict[str, tuple[str, dict[str, Any]]] = {
    "disable": ("Switch off", {"enabled": False}),
    "enable": ("Switch on", {"enabled": True}),
    "dry_run_on": ("Dry-run on", {"dry_run": True}),
    "dry_run_off": ("Dry-run off", {"dry_run": False}),
    "pause": ("Pause", {}),
    "resume": ("End the pause", {"pause_minutes": None}),
    "close_circuit": ("Close the circuit", {"close_circuit": True}),
}


class SwitchChangeForm(forms.Form):
    """One control of the switch panel; every change needs a reason for the audit trail."""

    change = forms.ChoiceField(choices=[(key, label) for key, (label, _) in SWITCH_CHANGES.items()])
    minutes = forms.IntegerField(required=False, min_value=1, max_value=safety.MAX_PAUSE_MINUTES)
    reason = forms.CharField(max_length=500, strip=True, error_messages={"required": "Give a reason for the change."})

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("change") == "pause" and not cleaned.get("minutes") and "minutes" not in self.errors:
            self.add_error("minutes", "Say for how many minutes to pause.")
        return cleaned

    def switch_kwargs(self) -> dict[str, Any]:
        change = self.cleaned_data["change"]
        kwargs = dict(SWITCH_CHANGES[change][1])
        if change == "pause":
            kwargs["pause_minutes"] = self.cleaned_data["minutes"]
        return kwargs


class AckForm(forms.Form):
    fingerprint = forms.CharField(max_length=64)
    note = forms.CharField(max_length=2000, required=False, strip=True)


class FalsePositiveForm(forms.Form):
    value = forms.TypedChoiceField(
        choices=[("true", "false positive"), ("false", "needed")], coerce=lambda v: v == "true"
    )


def _allowed(request: HttpRequest, *, admin: bool = False) -> HttpResponse | None:
    """None when the user may go on; a login redirect for anonymous users; 403 for a missing role."""
    if not request.user.is_authenticated:
        return redirect_to_login(reverse("ops"))
    if admin and not is_admin(request.user):
        raise PermissionDenied("Changing the switch needs the admin role.")
    if not is_ops(request.user):
        raise PermissionDenied("The Command Center needs the ops or admin role.")
    return None


def _grafana() -> dict[str, str]:
    base = (settings.AUTOHEAL_GRAFANA_URL or "").rstrip("/")
    if not base:
        return {}
    parts = urlsplit(base)
    embed = bool(settings.AUTOHEAL_GRAFANA_EMBED)
    return {
        "link": base + GRAFANA_DASHBOARD_PATH,
        "embed": base + GRAFANA_DASHBOARD_PATH + "?kiosk" if embed else "",
        "origin": f"{parts.scheme}://{parts.netloc}",
    }


def people_overview() -> Any:
    # Imported here: dashboard.people builds on this module's helpers.
    from dashboard.people import people_overview as overview

    return overview()


def _page(request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
    now = timezone.now()
    switch = switch_effective(now=now, row=switch_row())
    events, through = stream_backlog(limit=STREAM_BACKLOG, stream_filter=StreamFilter())
    grafana = _grafana()
    context = {
        "switch": switch,
        "switch_view": safety.switch_as_dict(switch, now=now),
        "can_change": is_admin(request.user),
        "overview": ops_overview(now=now),
        "events": events,
        "through": through,
        "grafana": grafana,
        "error": error,
        "people": people_overview(),
    }
    response = render(request, "dashboard/ops.html", context, status=status)
    if grafana.get("embed"):
        # Only this page may frame the operator's Grafana; every other page keeps frame-src 'self'.
        response._csp_update = {"frame-src": [grafana["origin"]]}  # type: ignore[attr-defined]
    return response


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


def _first_error(form: forms.Form) -> str:
    field, problems = next(iter(form.errors.items()))
    problem = str(problems[0])
    return problem if field == "__all__" else f"{field}: {problem}"


@require_GET
def ops(request: HttpRequest) -> HttpResponse:
    """``GET /ops/``: the switch, open incidents, cooldowns, recent actions, charts, live stream."""
    refused = _allowed(request)
    return refused or _page(request)


@require_POST
def switch_change(request: HttpRequest) -> HttpResponse:
    """``POST /ops/switch``: one change of the runtime switch, with a reason (admin only)."""
    refused = _allowed(request, admin=True)
    if refused:
        return refused
    form = SwitchChangeForm(request.POST)
    if not form.is_valid():
        return _page(request, error=_first_error(form), status=400)
    try:
        result = safety.switch_set(**form.switch_kwargs(), actor=_actor(request), reason=form.cleaned_data["reason"])
    except safety.SafetyError as exc:
        return _page(request, error=str(exc), status=400)
    label = SWITCH_CHANGES[form.cleaned_data["change"]][0]
    messages.success(request, f"{label}: done." if result.changed else f"{label}: nothing to change.")
    for note in result.notes:
        messages.warning(request, note)
    return HttpResponseRedirect(reverse("ops"))


@require_POST
def ack(request: HttpRequest) -> HttpResponse:
    """``POST /ops/ack``: take an incident over (the same service as ``POST /ack``)."""
    refused = _allowed(request)
    if refused:
        return refused
    form = AckForm(request.POST)
    if not form.is_valid():
        return _page(request, error=_first_error(form), status=400)
    try:
        alert = safety.incident_ack(
            fingerprint=form.cleaned_data["fingerprint"], note=form.cleaned_data["note"], actor=_actor(request)
        )
    except safety.IncidentNotFound as exc:
        return _page(request, error=str(exc), status=404)
    except safety.SafetyError as exc:
        return _page(request, error=str(exc), status=400)
    messages.success(request, f"{alert.alertname} ({alert.fingerprint}) acked by {alert.acked_by}.")
    return HttpResponseRedirect(reverse("ops"))


@require_POST
def false_positive(request: HttpRequest, job_id: int) -> HttpResponse:
    """``POST /ops/actions/<id>/false-positive``: an operator's verdict on one action."""
    refused = _allowed(request)
    if refused:
        return refused
    form = FalsePositiveForm(request.POST)
    if not form.is_valid():
        return _page(request, error=_first_error(form), status=400)
    try:
        job = job_mark_false_positive(job_id=job_id, value=form.cleaned_data["value"], actor=_actor(request))
    except MarkError as exc:
        return _page(request, error=str(exc), status=400)
    verdict = "a false positive" if job.false_positive else "needed"
    messages.success(request, f"Action {job.pk} marked {verdict}.")
    return HttpResponseRedirect(reverse("ops"))
