"""Looking at one policy in the admin: a trial run of a payload, and the policy's change history.

Both only read. The trial is the simulator (``payload_simulate``, the code behind
``manage.py autoheal_simulate``) plus, for the policy under review, intake's own planner run on
that policy alone (as if enabled), so a policy that is disabled or outranked still says what it
would have done, with the same matching, target rendering and limits as ingest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from audit.models import AuditEvent
from remediation.models import Policy
from remediation.payload import parse_delivery
from remediation.planning import plan_alert
from remediation.policies import policy_rule
from remediation.simulation import Outcome, payload_simulate

# A policy page shows this many of its newest changes.
HISTORY_SHOWN = 50
# Renames followed back through the history (each adds one query).
RENAMES_FOLLOWED = 5


@dataclass(frozen=True)
class AlertFit:
    """How the reviewed policy fits one alert of the payload."""

    alertname: str
    fingerprint: str
    matches: bool
    target: str
    problem: str


@dataclass(frozen=True)
class PolicyTrial:
    """The simulator's outcomes for the whole payload and the reviewed policy's fit per alert."""

    outcomes: list[Outcome]
    fits: list[AlertFit]
    policy_enabled: bool

    @property
    def matched(self) -> int:
        return sum(1 for fit in self.fits if fit.matches)


def policy_try(*, policy: Policy, payload: Mapping[str, Any], check: bool = True) -> PolicyTrial:
    """Run ``payload`` through the simulator (touching nothing) and fit it to ``policy``.

    Raises PayloadError for a body that is not an Alertmanager webhook v4 payload.
    """
    outcomes = payload_simulate(payload=payload, check=check)
    delivery = parse_delivery(payload)
    rule = policy_rule(policy, enabled=True)
    fits = []
    for alert in delivery.alerts:
        planned = plan_alert(alert.labels, [rule])
        target = planned[0].target if planned else ""
        problem = planned[0].error if planned else ""
        fits.append(AlertFit(alert.alertname, alert.fingerprint, bool(planned), target, problem))
    return PolicyTrial(outcomes=outcomes, fits=fits, policy_enabled=policy.enabled)


@dataclass(frozen=True)
class PolicyChange:
    """One ``policy_changed`` event as the policy page shows it."""

    id: int
    ts: datetime
    actor: str
    operation: str
    source: str
    changes: list[tuple[str, Any, Any]]


def policy_history(*, policy: Policy) -> list[PolicyChange]:
    """The policy's ``policy_changed`` events, newest first, following renames back."""
    names = {policy.name}
    events: list[AuditEvent] = []
    for _ in range(RENAMES_FOLLOWED + 1):
        events = list(
            AuditEvent.objects.filter(kind="policy_changed", policy__in=names)
            .defer("search")
            .order_by("-id")[:HISTORY_SHOWN]
        )
        earlier = {
            change["old"]
            for event in events
            if isinstance(change := (event.data.get("changes") or {}).get("name"), dict)
            and isinstance(change.get("old"), str)
        }
        if earlier <= names:
            break
        names |= earlier
    return [
        PolicyChange(
            id=event.id,
            ts=event.ts,
            actor=event.actor,
            operation=str(event.data.get("operation", "")),
            source=str(event.data.get("source", "")),
            changes=[
                (field, change.get("old"), change.get("new"))
                for field, change in (event.data.get("changes") or {}).items()
                if isinstance(change, dict)
            ],
        )
        for event in events
    ]
