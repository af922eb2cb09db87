"""What a payload would do today, touching nothing: routing plus every guard, read-only.

Used by ``manage.py autoheal_simulate``. It reads policies, incidents, the switch and the action
history; it writes no row and no audit event, and the executors' ``check`` it runs only reads (a
Docker inspect, a DNS lookup, rendering a command line).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from remediation import safety
from remediation.decisions import HistoryFacts, JobFacts, job_decide
from remediation.execution.facts import circuit_counts, switch_facts, target_history
from remediation.executors import JobSpec, NotAllowed, executor_for
from remediation.models import DESTRUCTIVE_ACTIONS, Alert, Policy, Switch
from remediation.payload import parse_delivery
from remediation.policies import policy_rules
from remediation.routing import route_alert


@dataclass(frozen=True)
class Outcome:
    """One line of the simulation: an alert, a policy (or none), what would happen and why."""

    alertname: str
    fingerprint: str
    status: str
    policy: str
    action: str
    target: str
    verdict: str  # run | dry_run | skip | delay | duplicate | resolve | no_policy
    reason: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def payload_simulate(*, payload: Mapping[str, Any], now: datetime | None = None, check: bool = True) -> list[Outcome]:
    """Run a webhook v4 payload through routing and the guards as they stand now.

    Raises PayloadError for a body that is not a valid payload.
    """
    now = now or timezone.now()
    delivery = parse_delivery(payload)
    rules = policy_rules()
    policies = {p.pk: p for p in Policy.objects.filter(pk__in=[r.policy_id for r in rules if r.policy_id])}
    row = Switch.objects.filter(pk=1).first()
    limits = safety.limits_from_settings()
    actions, failures = circuit_counts(row=row, now=now, limits=limits)
    outcomes: list[Outcome] = []
    for alert in delivery.alerts:
        base = {"alertname": alert.alertname, "fingerprint": alert.fingerprint, "status": alert.status}
        existing = Alert.objects.filter(fingerprint=alert.fingerprint, starts_at=alert.starts_at).first()
        if alert.status == Alert.Status.RESOLVED:
            message = "closes the open incident" if existing and existing.status == "firing" else "nothing is open"
            outcomes.append(
                Outcome(**base, policy="", action="", target="", verdict="resolve", reason="resolved", message=message)
            )
            continue
        if existing is not None:
            outcomes.append(
                Outcome(
                    **base,
                    policy="",
                    action="",
                    target="",
                    verdict="duplicate",
                    reason="duplicate",
                    message=f"incident {existing.pk} ({existing.status}) already exists: no new job",
                )
            )
            continue
        routes = route_alert(alert.labels, rules)
        if not routes:
            outcomes.append(
                Outcome(
                    **base,
                    policy="",
                    action="",
                    target="",
                    verdict="no_policy",
                    reason="no_policy",
                    message="no enabled policy matches",
                )
            )
            continue
        for route in routes:
            rule = route.rule
            if route.target is None:
                outcomes.append(
                    Outcome(
                        **base,
                        policy=rule.name,
                        action=rule.action,
                        target="",
                        verdict="skip",
                        reason="not_allowed",
                        message=route.error,
                    )
                )
                continue
            policy = policies.get(rule.policy_id or -1)
            job = JobFacts(
                destructive=rule.action in DESTRUCTIVE_ACTIONS,
                policy_dry_run=rule.dry_run,
                cooldown_seconds=policy.cooldown_seconds if policy else 300,
                max_actions_per_hour=policy.max_actions_per_hour if policy else 3,
            )
            history = HistoryFacts(
                target_actions=target_history(target=route.target, now=now),
                circuit_actions=actions,
                circuit_failures=failures,
            )
            decision = job_decide(job=job, switch=switch_facts(row), history=history, limits=limits, now=now)
            verdict, reason, message = decision.verdict, decision.reason, decision.message
            if check and verdict in ("run", "dry_run"):
                try:
                    executor_for(rule.action).check(
                        JobSpec(action=rule.action, target=route.target, params=dict(rule.params), labels=alert.labels)
                    )
                except NotAllowed as exc:
                    verdict, reason, message = "skip", "not_allowed", str(exc)
                except Exception as exc:
                    message = f"{message} (the target could not be checked now: {type(exc).__name__})".strip()
            if verdict == "run" and not message:
                message = f"would {rule.action} {route.target}"
            outcomes.append(
                Outcome(
                    **base,
                    policy=rule.name,
                    action=rule.action,
                    target=route.target,
                    verdict=verdict,
                    reason=reason,
                    message=message,
                )
            )
    return outcomes
