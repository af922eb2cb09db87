"""Safety services: the runtime kill switch and pause, the circuit breaker, ack and escalation.

Each service changes state and writes its audit event in the same transaction.

Dry-run and kill-switch floors: ``AUTOHEAL_ENABLED=false`` and ``AUTOHEAL_DRY_RUN=true`` in the
environment are floors that the runtime switch can never loosen. A request to loosen beyond a floor
is not refused (that would also refuse the safer half of a request such as
``{"enabled": false, "dry_run": false}`` in an emergency): the runtime layer stores what was asked,
the effective value stays at the floor, and the answer and the audit event say so in ``notes``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from remediation.decisions import Limits
from remediation.models import Alert, Job, Switch
from remediation.selectors import EffectiveSwitch, switch_effective

SYSTEM_ACTOR = "autoheal"
MAX_PAUSE_MINUTES = 7 * 24 * 60
UNCHANGED: Literal["unchanged"] = "unchanged"


class SafetyError(ValueError):
    """A request to a safety service that cannot be applied; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class IncidentNotFound(LookupError):
    """No firing incident has the given fingerprint."""


def limits_from_settings() -> Limits:
    """The global safety limits as configured."""
    return Limits(
        circuit_max_actions=settings.AUTOHEAL_CIRCUIT_MAX_ACTIONS,
        circuit_max_failures=settings.AUTOHEAL_CIRCUIT_MAX_FAILURES,
        circuit_window_seconds=settings.AUTOHEAL_CIRCUIT_WINDOW_SECONDS,
        circuit_cooloff_seconds=settings.AUTOHEAL_CIRCUIT_COOLOFF_SECONDS,
        backoff_base_seconds=settings.AUTOHEAL_BACKOFF_BASE_SECONDS,
        backoff_max_seconds=settings.AUTOHEAL_BACKOFF_MAX_SECONDS,
        backoff_reset_seconds=settings.AUTOHEAL_BACKOFF_RESET_SECONDS,
    )


def switch_locked() -> Switch:
    """The switch row, locked for this transaction (created with safe defaults if missing)."""
    return Switch.objects.locked()


def _snapshot(row: Switch) -> dict[str, Any]:
    return {
        "enabled": row.enabled,
        "dry_run": row.dry_run,
        "paused_until": row.paused_until.isoformat() if row.paused_until else None,
        "circuit_open": row.circuit_open,
    }


@dataclass(frozen=True)
class SwitchResult:
    """The switch after a change: the effective values, and notes about floors."""

    effective: EffectiveSwitch
    changed: bool
    notes: list[str] = field(default_factory=list)


def switch_set(
    *,
    enabled: bool | None = None,
    dry_run: bool | None = None,
    pause_minutes: int | None | Literal["unchanged"] = UNCHANGED,
    actor: str,
    reason: str = "",
    close_circuit: bool = False,
    now: datetime | None = None,
) -> SwitchResult:
    """Change the runtime switch: enable/disable, pause for N minutes, dry-run, close the circuit.

    ``{"enabled": false, "pause_minutes": 30}`` pauses everything for 30 minutes and then resumes by
    itself; ``enabled: false`` alone switches off until switched on; ``enabled: true`` switches on
    and ends a pause; ``pause_minutes: null`` ends a pause.
    """
    now = now or timezone.now()
    if pause_minutes != UNCHANGED and pause_minutes is not None:
        if (
            isinstance(pause_minutes, bool)
            or not isinstance(pause_minutes, int)
            or not 1 <= pause_minutes <= MAX_PAUSE_MINUTES
        ):
            raise SafetyError(
                f"pause_minutes must be an integer from 1 to {MAX_PAUSE_MINUTES}, or null", field="pause_minutes"
            )
        if enabled is True:
            raise SafetyError(
                "pause_minutes: a pause switches remediation off; send enabled=false with it (or leave enabled out)",
                field="pause_minutes",
            )
    if enabled is None and dry_run is None and pause_minutes == UNCHANGED and not close_circuit:
        raise SafetyError("nothing to change: give enabled, dry_run, pause_minutes or close_circuit")
    with transaction.atomic():
        row = switch_locked()
        before = _snapshot(row)
        if isinstance(pause_minutes, int):
            row.paused_until = now + timedelta(minutes=pause_minutes)
        elif pause_minutes is None:
            row.paused_until = None
        if enabled is True:
            row.enabled = True
            row.paused_until = None
        elif enabled is False and not isinstance(pause_minutes, int):
            row.enabled = False
        if dry_run is not None:
            row.dry_run = dry_run
        after = _snapshot(row)
        notes = _floor_notes(enabled=enabled, dry_run=dry_run)
        changed = after != before
        if changed:
            row.updated_at = now
            row.updated_by = actor[:150]
            row.save()
            effective = switch_effective(now=now, row=row)
            audit_record(
                kind="switch_changed",
                actor=actor,
                message=reason or _describe(before, after),
                data={
                    "before": before,
                    "after": after,
                    "effective": {"enabled": effective.enabled, "dry_run": effective.dry_run},
                    "reason": reason,
                    "notes": notes,
                },
            )
        if close_circuit:
            changed = circuit_close(actor=actor, reason=reason or "closed with the switch", now=now) or changed
        return SwitchResult(
            effective=switch_effective(now=now, row=Switch.objects.current_or_default()), changed=changed, notes=notes
        )


def _floor_notes(*, enabled: bool | None, dry_run: bool | None) -> list[str]:
    notes = []
    if enabled is True and not settings.AUTOHEAL_ENABLED:
        notes.append("AUTOHEAL_ENABLED=false is a floor: remediation stays off whatever the runtime switch says")
    if dry_run is False and settings.AUTOHEAL_DRY_RUN:
        notes.append("AUTOHEAL_DRY_RUN=true is a floor: dry-run stays on whatever the runtime switch says")
    return notes


def _describe(before: dict[str, Any], after: dict[str, Any]) -> str:
    parts = [f"{key}: {before[key]} -> {after[key]}" for key in after if before[key] != after[key]]
    return "switch changed: " + ", ".join(parts)


def pause_expire(*, now: datetime | None = None) -> bool:
    """End a pause whose time is up (audited as a switch change by Autoheal itself)."""
    now = now or timezone.now()
    if not Switch.objects.singleton().filter(paused_until__lte=now).exists():
        return False
    with transaction.atomic():
        row = switch_locked()
        if row.paused_until is None or row.paused_until > now:
            return False
        before = _snapshot(row)
        row.paused_until = None
        row.updated_at = now
        row.updated_by = SYSTEM_ACTOR
        row.save()
        audit_record(
            kind="switch_changed",
            actor=SYSTEM_ACTOR,
            message="the pause ended",
            data={"before": before, "after": _snapshot(row), "reason": "pause expired", "notes": []},
        )
    return True


def circuit_trip(*, reason: str, now: datetime | None = None, data: dict[str, Any] | None = None) -> bool:
    """Open the circuit breaker: all destructive actions stop until it closes."""
    now = now or timezone.now()
    with transaction.atomic():
        row = switch_locked()
        if row.circuit_open and not row.circuit_half_open:
            return False
        was_probe = row.circuit_half_open
        row.circuit_open = True
        row.circuit_half_open = False
        row.circuit_opened_at = now
        row.circuit_reason = reason[:255]
        row.save()
        audit_record(
            kind="circuit_open",
            actor=SYSTEM_ACTOR,
            message=reason,
            data={**(data or {}), "reason": reason, "after_probe": was_probe},
        )
    return True


def circuit_close(*, actor: str, reason: str, now: datetime | None = None) -> bool:
    """Close the circuit breaker (an operator, or a successful probe); counting starts afresh."""
    now = now or timezone.now()
    with transaction.atomic():
        row = switch_locked()
        if not row.circuit_open:
            return False
        opened_at = row.circuit_opened_at
        row.circuit_open = False
        row.circuit_half_open = False
        row.circuit_reset_at = now
        row.circuit_reason = ""
        row.save()
        audit_record(
            kind="circuit_closed",
            actor=actor,
            message=reason,
            data={"reason": reason, "opened_at": opened_at.isoformat() if opened_at else None},
        )
    return True


def circuit_half_open(*, now: datetime | None = None, cooloff_seconds: int | None = None) -> bool:
    """After the cool-off, let one probe action through the open circuit."""
    now = now or timezone.now()
    cooloff = settings.AUTOHEAL_CIRCUIT_COOLOFF_SECONDS if cooloff_seconds is None else cooloff_seconds
    due = now - timedelta(seconds=cooloff)
    if (
        not Switch.objects.singleton()
        .filter(circuit_open=True, circuit_half_open=False, circuit_opened_at__lte=due)
        .exists()
    ):
        return False
    with transaction.atomic():
        row = switch_locked()
        if not row.circuit_open or row.circuit_half_open or (row.circuit_opened_at and row.circuit_opened_at > due):
            return False
        # Not an audit kind of its own: the circuit is still open (the gauge stays 1) until the
        # probe's outcome closes it (circuit_closed) or opens it again (circuit_open).
        row.circuit_half_open = True
        row.circuit_reset_at = now
        row.save()
    return True


def incident_ack(*, fingerprint: str, note: str, actor: str, now: datetime | None = None) -> Alert:
    """An operator takes the incident over: no further action for it until it resolves."""
    now = now or timezone.now()
    if not fingerprint or len(fingerprint) > 64:
        raise SafetyError("fingerprint must be a non-empty string of at most 64 characters", field="fingerprint")
    with transaction.atomic():
        alert = (
            Alert.objects.select_for_update()
            .filter(fingerprint=fingerprint, status=Alert.Status.FIRING)
            .order_by("-starts_at")
            .first()
        )
        if alert is None:
            raise IncidentNotFound(f"no firing incident has the fingerprint {fingerprint}")
        if alert.acked_at is not None:
            return alert
        alert.acked_at = now
        alert.acked_by = actor[:150]
        alert.ack_note = note
        alert.save(update_fields=["acked_at", "acked_by", "ack_note"])
        audit_record(
            kind="ack",
            actor=actor,
            alertname=alert.alertname,
            fingerprint=alert.fingerprint,
            message=note or "acked",
            data={"note": note, "incident": alert.pk, "starts_at": alert.starts_at.isoformat()},
        )
    return alert


def incident_escalate(*, alert: Alert, job: Job, reason: str, now: datetime | None = None) -> bool:
    """The budget is spent and the incident still fires: hand it to a person (once per incident).

    Audited as ``incident_escalated`` (data.escalated=true, attempts, reason) so the
    ``autoheal-notify`` Alertmanager route can page on ``autoheal_event_total{kind="incident_escalated"}``.
    """
    now = now or timezone.now()
    with transaction.atomic():
        locked = Alert.objects.select_for_update().get(pk=alert.pk)
        if locked.escalated_at is not None:
            return False
        locked.escalated_at = now
        locked.save(update_fields=["escalated_at"])
        attempts = Job.objects.filter(alert=locked, policy_name=job.policy_name).exclude(started_at=None).count()
        audit_record(
            kind="incident_escalated",
            actor=SYSTEM_ACTOR,
            alertname=locked.alertname,
            fingerprint=locked.fingerprint,
            policy=job.policy_name,
            target=job.target,
            message=reason,
            data={"escalated": True, "attempts": attempts, "reason": reason, "job": job.pk, "action": job.action},
        )
    return True


def switch_as_dict(effective: EffectiveSwitch, *, now: datetime | None = None) -> dict[str, Any]:
    """The switch as the API shows it."""
    now = now or timezone.now()
    remaining = None
    if effective.paused_until is not None:
        seconds = (effective.paused_until - now).total_seconds()
        remaining = max(1, int(-(-seconds // 60)))
    data = asdict(effective)
    return {
        "enabled": effective.enabled,
        "dry_run": effective.dry_run,
        "pause_minutes": remaining,
        "paused_until": effective.paused_until.isoformat() if effective.paused_until else None,
        "circuit": "open" if effective.circuit_open else "closed",
        "runtime": {"enabled": data["runtime_enabled"], "dry_run": data["runtime_dry_run"]},
        "floors": {"AUTOHEAL_ENABLED": data["env_enabled"], "AUTOHEAL_DRY_RUN": data["env_dry_run"]},
    }
