"""What a payload would do today, touching nothing: routing plus every guard, read-only.

Used by ``manage.py autoheal_simulate`` and the admin's "try this policy". The routing is intake's
own planner (:mod:`remediation.planning`), so ``queued`` says exactly whether ingest would queue a
job. It reads policies, incidents, the switch and the action history; it writes no row and no
audit event, and the executors' ``check`` it runs only reads (a Docker inspect, a DNS lookup,
rendering a command line). When the target cannot be checked (Docker does not answer) it says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from remediation import safety
from remediation.decisions import Decision, HistoryFacts, JobFacts, Limits, job_decide
from remediation.execution.facts import circuit_counts, switch_facts, target_history
from remediation.executors import JobSpec, NotAllowed, executor_for
from remediation.models import DESTRUCTIVE_ACTIONS, Alert, Policy, Switch
from remediation.payload import IncomingAlert, parse_delivery
from remediation.planning import PlannedAction, plan_alert, policy_limits
from remediation.policies import policy_rules


@dataclass(frozen=True)
class Outcome:
    """One line of the simulation: an alert, a policy (or none), what would happen and why.

    ``queued`` is whether ingest would queue a job for this line (the guards then decide at run
    time, which ``verdict`` predicts).
    """

    alertname: str
    fingerprint: str
    status: str
    policy: str
    action: str
    target: str
    verdict: str  # run | dry_run | skip | delay | duplicate | resolve | no_policy
    reason: str
    message: str
    queued: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _World:
    """What the guards read, read once per simulation."""

    now: datetime
    row: Switch | None
    limits: Limits
    circuit_actions: int
    circuit_failures: int
    policies: dict[int, Policy]


def payload_simulate(*, payload: Mapping[str, Any], now: datetime | None = None, check: bool = True) -> list[Outcome]:
    """Run a webhook v4 payload through intake's planner and the guards as they stand now.

    Raises PayloadError for a body that is not a valid payload (the same that ingest refuses).
    """
    now = now or timezone.now()
    delivery = parse_delivery(payload)
    rules = policy_rules()
    row = Switch.objects.current()
    limits = safety.limits_from_settings()
    actions, failures = circuit_counts(row=row, now=now, limits=limits)
    world = _World(
        now=now,
        row=row,
        limits=limits,
        circuit_actions=actions,
        circuit_failures=failures,
        policies={p.pk: p for p in Policy.objects.filter(pk__in=[r.policy_id for r in rules if r.policy_id])},
    )
    outcomes: list[Outcome] = []
    for alert in delivery.alerts:
        base: dict[str, Any] = {"alertname": alert.alertname, "fingerprint": alert.fingerprint, "status": alert.status}
        existing = Alert.objects.filter(fingerprint=alert.fingerprint, starts_at=alert.starts_at).first()
        if alert.status == Alert.Status.RESOLVED:
            message = "closes the open incident" if existing and existing.status == "firing" else "nothing is open"
            outcomes.append(
                Outcome(**base, policy="", action="", target="", verdict="resolve", reason="resolved", message=message)
            )
            continue
        if existing is not None:
            message = f"incident {existing.pk} ({existing.status}) already exists: no new job"
            outcomes.append(
                Outcome(
                    **base, policy="", action="", target="", verdict="duplicate", reason="duplicate", message=message
                )
            )
            continue
        planned = plan_alert(alert.labels, rules)
        if not planned:
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
        outcomes.extend(_outcome(base, alert, action, world, check=check) for action in planned)
    return outcomes


def _outcome(
    base: dict[str, Any], alert: IncomingAlert, planned: PlannedAction, world: _World, *, check: bool
) -> Outcome:
    rule = planned.rule
    line: dict[str, Any] = {**base, "policy": rule.name, "action": rule.action, "target": planned.target}
    if not planned.queues:
        return Outcome(**line, verdict="skip", reason=planned.skip_reason, message=planned.error)
    cooldown_seconds, max_actions_per_hour = policy_limits(world.policies.get(rule.policy_id or -1))
    job = JobFacts(
        destructive=rule.action in DESTRUCTIVE_ACTIONS,
        policy_dry_run=rule.dry_run,
        cooldown_seconds=cooldown_seconds,
        max_actions_per_hour=max_actions_per_hour,
    )
    history = HistoryFacts(
        target_actions=target_history(target=planned.target, now=world.now),
        circuit_actions=world.circuit_actions,
        circuit_failures=world.circuit_failures,
    )
    decision = job_decide(job=job, switch=switch_facts(world.row), history=history, limits=world.limits, now=world.now)
    if check and decision.verdict in ("run", "dry_run"):
        decision = _checked(decision, alert, planned)
    message = decision.message
    if decision.verdict == "run" and not message:
        message = f"would {rule.action} {planned.target}"
    return Outcome(**line, verdict=decision.verdict, reason=decision.reason, message=message, queued=True)


def _checked(decision: Decision, alert: IncomingAlert, planned: PlannedAction) -> Decision:
    """The executor's read-only check: a missing, ambiguous or refused target turns it into a skip."""
    rule = planned.rule
    try:
        executor_for(rule.action).check(
            JobSpec(action=rule.action, target=planned.target, params=dict(rule.params), labels=alert.labels)
        )
    except NotAllowed as exc:
        return Decision("skip", exc.reason, str(exc))
    except Exception as exc:
        # Docker (or DNS) did not answer: the verdict stands, and the output says it is unchecked.
        note = f"could not check the target now ({type(exc).__name__}): it may not exist"
        return Decision(decision.verdict, decision.reason, f"{decision.message}; {note}" if decision.message else note)
    return decision
