"""Which policies an alert matches, in which order, against which target. Pure.

Policies come in as plain ``PolicyRule`` values (built from rows by ``remediation.policies`` or from
YAML by the simulator), so the same routing serves the webhook, the Docker watcher, the simulator
and the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from remediation.matchers import Matcher, matches_all, parse_matchers
from remediation.targets import MissingLabel, Template, compile_template


@dataclass(frozen=True)
class PolicyRule:
    """A policy as routing needs it: parsed matchers and a checked target template."""

    name: str
    matchers: tuple[Matcher, ...]
    action: str
    target: Template
    params: Mapping[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    priority: int = 100
    enabled: bool = True
    policy_id: int | None = None
    # Fleet placement: the Docker host the target lives on (None: found by name in the inventories).
    host: Template | None = None

    @classmethod
    def build(
        cls,
        *,
        name: str,
        matchers: Iterable[str],
        action: str,
        target: str,
        params: Mapping[str, Any] | None = None,
        dry_run: bool = False,
        priority: int = 100,
        enabled: bool = True,
        policy_id: int | None = None,
        host: str = "",
    ) -> PolicyRule:
        """Parse matchers and template; raises MatcherError or TemplateError."""
        return cls(
            name=name,
            matchers=tuple(parse_matchers(matchers)),
            action=action,
            target=compile_template(target),
            params=dict(params or {}),
            dry_run=dry_run,
            priority=priority,
            enabled=enabled,
            policy_id=policy_id,
            host=compile_template(host) if host else None,
        )


@dataclass(frozen=True)
class Route:
    """One matching policy and its rendered target, or why the target could not be rendered."""

    rule: PolicyRule
    target: str | None
    error: str = ""
    missing_label: str = ""
    # The rendered host template ("" when the policy names no host).
    host: str = ""

    @property
    def ok(self) -> bool:
        return self.target is not None


def route_alert(labels: Mapping[str, str], rules: Sequence[PolicyRule]) -> list[Route]:
    """The enabled rules matching ``labels``, by priority (lower first) then name, with targets."""
    matching = sorted(
        (rule for rule in rules if rule.enabled and matches_all(rule.matchers, labels)),
        key=lambda rule: (rule.priority, rule.name),
    )
    routes = []
    for rule in matching:
        try:
            host = rule.host.render(labels) if rule.host is not None else ""
            routes.append(Route(rule=rule, target=rule.target.render(labels), host=host))
        except MissingLabel as exc:
            routes.append(Route(rule=rule, target=None, error=str(exc), missing_label=exc.label))
    return routes
