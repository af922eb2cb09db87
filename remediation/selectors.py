"""Reads used by views, the API, the worker and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from autoheal_site.utc import iso_utc
from remediation.models import Job, Switch


@dataclass(frozen=True)
class EffectiveSwitch:
    """The switch as it applies now: the runtime row tightened by the environment floors."""

    enabled: bool
    dry_run: bool
    paused_until: datetime | None
    circuit_open: bool
    runtime_enabled: bool
    runtime_dry_run: bool
    env_enabled: bool
    env_dry_run: bool

    @property
    def paused(self) -> bool:
        return self.paused_until is not None


def switch_row() -> Switch:
    """The single runtime switch row; its safe defaults (unsaved) until someone changes it.

    Reading never writes: GET /, /metrics and the simulator must leave the database as it was.
    The safety services create the row when they change it.
    """
    return Switch.objects.current_or_default()


def switch_effective(*, now: datetime | None = None, row: Switch | None = None) -> EffectiveSwitch:
    """Combine the runtime switch with the environment floors; an expired pause no longer applies."""
    now = now or timezone.now()
    row = row or switch_row()
    paused_until = row.paused_until if row.paused_until and row.paused_until > now else None
    env_enabled = bool(settings.AUTOHEAL_ENABLED)
    env_dry_run = bool(settings.AUTOHEAL_DRY_RUN)
    return EffectiveSwitch(
        enabled=env_enabled and row.enabled and paused_until is None,
        dry_run=env_dry_run or row.dry_run,
        paused_until=paused_until,
        circuit_open=row.circuit_open,
        runtime_enabled=row.enabled,
        runtime_dry_run=row.dry_run,
        env_enabled=env_enabled,
        env_dry_run=env_dry_run,
    )


def queue_depth() -> int:
    """Jobs waiting to run (queued, due or not)."""
    return Job.objects.filter(state=Job.State.QUEUED).count()


def health_status() -> dict[str, object]:
    """The public health JSON of ``GET /``: state only, never a secret."""
    from audit.models import AuditEvent

    switch = switch_effective()
    last = AuditEvent.objects.order_by("-id").values_list("ts", flat=True).first()
    return {
        "service": "autoheal",
        "version": settings.VERSION,
        "enabled": switch.enabled,
        "dry_run": switch.dry_run,
        "paused_until": iso_utc(switch.paused_until),
        "circuit": "open" if switch.circuit_open else "closed",
        "queue_depth": queue_depth(),
        "last_event_at": iso_utc(last),
    }
