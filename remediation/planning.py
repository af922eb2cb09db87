"""The one route planner: which jobs an alert calls for, as ingest, the simulator and the admin see it.

Intake queues exactly the planned actions that ``queues``; ``autoheal_simulate`` and the admin's
"try this policy" show the same plan, then add what the guards and the target check would say.
Matching, target rendering, the target length limit and the policy defaults live here only, so
the three can never disagree.

Pure apart from :func:`policy_limits`, which reads two fields of a policy row (or its absence).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from remediation.decisions import DEFAULT_COOLDOWN_SECONDS, DEFAULT_MAX_ACTIONS_PER_HOUR
from remediation.routing import PolicyRule, route_alert

# Job.target's column: a longer rendered target could not be stored, so it is a routing skip.
MAX_TARGET_LENGTH = 255


@dataclass(frozen=True)
class PlannedAction:
    """One matching policy: the job it queues, or why it queues none (``skip_reason``)."""

    rule: PolicyRule
    target: str
    skip_reason: str = ""
    error: str = ""
    missing_label: str = ""
    # The rendered host template ("": the policy names none; fleet.placement decides).
    host: str = ""

    @property
    def queues(self) -> bool:
        """Whether intake queues a job for it (the guards decide later whether it runs)."""
        return not self.skip_reason


def plan_alert(labels: Mapping[str, str], rules: Sequence[PolicyRule]) -> list[PlannedAction]:
    """The matching enabled rules by priority then name, each with its job or its skip reason.

    An empty list means no enabled policy matches (``no_policy``).
    """
    planned = []
    for route in route_alert(labels, rules):
        if route.target is None:
            planned.append(
                PlannedAction(
                    rule=route.rule,
                    target="",
                    skip_reason="not_allowed",
                    error=route.error,
                    missing_label=route.missing_label,
                )
            )
        elif len(route.target) > MAX_TARGET_LENGTH:
            planned.append(
                PlannedAction(
                    rule=route.rule,
                    target="",
                    skip_reason="not_allowed",
                    error=f"the rendered target is longer than {MAX_TARGET_LENGTH} characters",
                )
            )
        else:
            planned.append(PlannedAction(rule=route.rule, target=route.target, host=route.host))
    return planned


class _Limited(Protocol):
    cooldown_seconds: int
    max_actions_per_hour: int


def policy_limits(policy: _Limited | None) -> tuple[int, int]:
    """(cooldown_seconds, max_actions_per_hour) of a policy, or the defaults once it is deleted."""
    if policy is None:
        return DEFAULT_COOLDOWN_SECONDS, DEFAULT_MAX_ACTIONS_PER_HOUR
    return policy.cooldown_seconds, policy.max_actions_per_hour
