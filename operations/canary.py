"""The canary gate: may this deployment leave dry-run (or stay live)?

The success criteria of a canary: Prometheus has Autoheal's rules loaded and healthy, none of
Autoheal's own alerts fired during the window or fires now (the SLOs stayed green), the dry-run
events the operators expect are in the audit trail, and nothing ran for real while dry-run was on.
Run again during the validation after going live, the same command accepts successful real actions
(``action_ok``) as evidence for the expected alerts. ``canary_observe`` gathers the facts (Prometheus HTTP API, the audit trail); ``canary_evaluate`` is
pure and turns them into checks with reasons.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import requests
from django.db.models import Count
from django.utils import timezone

from audit.models import AuditEvent
from remediation.selectors import switch_effective


@dataclass(frozen=True)
class Rule:
    """One rule as Prometheus reports it (GET /api/v1/rules)."""

    name: str
    type: str  # "alerting" or "recording"
    health: str  # "ok", "err" or "unknown" (not evaluated yet)
    error: str
    labels: dict[str, str]


@dataclass(frozen=True)
class CanaryObservation:
    """Everything the canary verdict depends on, gathered at one moment."""

    window: timedelta
    expected: tuple[str, ...]
    label: tuple[str, str]
    prometheus_error: str = ""
    rules: tuple[Rule, ...] = ()
    firing_now: tuple[str, ...] = ()
    fired_in_window: tuple[str, ...] = ()
    dry_run_events: dict[str, int] = field(default_factory=dict)
    ok_events: dict[str, int] = field(default_factory=dict)
    live_actions: int = 0
    dry_run_on: bool = True


@dataclass(frozen=True)
class Check:
    """One success criterion and whether it held."""

    name: str
    ok: bool
    detail: str


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _is_autoheal_rule(rule: Rule, label: tuple[str, str]) -> bool:
    if rule.type == "recording":
        return rule.name.startswith("autoheal:")
    return rule.labels.get(label[0]) == label[1]


def _rule_problem(rule: Rule) -> str:
    if rule.health == "unknown":
        return "not evaluated yet"
    return rule.error or rule.health


def canary_evaluate(*, observation: CanaryObservation) -> list[Check]:
    """Turn the observation into checks; the canary passes only if every check is ok. Pure."""
    obs = observation
    window = _duration(obs.window)
    selector = f'{obs.label[0]}="{obs.label[1]}"'
    checks: list[Check] = []
    if obs.prometheus_error:
        checks.append(Check("prometheus reachable", False, obs.prometheus_error))
    else:
        checks.append(Check("prometheus reachable", True, "answers its HTTP API"))
        ours = [rule for rule in obs.rules if _is_autoheal_rule(rule, obs.label)]
        alerting = [rule for rule in ours if rule.type == "alerting"]
        if alerting:
            recording = len(ours) - len(alerting)
            detail = f"{len(alerting)} alerting rules with {selector}, {recording} autoheal:* recording rules"
            checks.append(Check("autoheal rules loaded", True, detail))
        else:
            detail = f"no alerting rule labelled {selector} is loaded: add deploy/prometheus/rules to rule_files"
            checks.append(Check("autoheal rules loaded", False, detail))
        unhealthy = [rule for rule in ours if rule.health != "ok"]
        if unhealthy:
            detail = "; ".join(f"{rule.name}: {_rule_problem(rule)}" for rule in unhealthy)
            checks.append(Check("rules evaluate", False, detail))
        else:
            checks.append(Check("rules evaluate", True, f"{len(ours)} rules healthy"))
        if obs.firing_now:
            checks.append(Check("no autoheal alert firing", False, "firing now: " + ", ".join(obs.firing_now)))
        else:
            checks.append(Check("no autoheal alert firing", True, "none firing now"))
        if obs.fired_in_window:
            detail = f"fired in the last {window}: " + ", ".join(obs.fired_in_window)
            checks.append(Check(f"SLOs green for {window}", False, detail))
        else:
            checks.append(Check(f"SLOs green for {window}", True, f"no autoheal alert fired in the last {window}"))
    # In the canary only dry-run events count; once live (the 72-hour validation), a real action
    # that succeeded shows the expected alert was handled just as well.
    if obs.dry_run_on:
        counts, what, name = dict(obs.dry_run_events), "action_dry_run", "dry-run events"
    else:
        counts = Counter(obs.dry_run_events) + Counter(obs.ok_events)
        what, name = "action_ok or action_dry_run", "handled alerts"
    if obs.expected:
        missing = [alert for alert in obs.expected if not counts.get(alert)]
        seen = ", ".join(f"{alert}: {counts.get(alert, 0)}" for alert in obs.expected)
        if missing:
            detail = f"no {what} event in the last {window} for " + ", ".join(missing) + f" ({seen})"
            checks.append(Check(f"expected {name}", False, detail))
        else:
            checks.append(Check(f"expected {name}", True, seen))
    else:
        total = sum(counts.values())
        if total:
            checks.append(Check(name, True, f"{total} {what} events in the last {window}"))
        else:
            detail = f"no {what} event in the last {window}: nothing to judge (name alerts with --expect)"
            checks.append(Check(name, False, detail))
    if obs.dry_run_on:
        if obs.live_actions:
            detail = f"{obs.live_actions} action_started events in the last {window} while dry-run is on"
            checks.append(Check("nothing ran for real", False, detail))
        else:
            checks.append(Check("nothing ran for real", True, "dry-run is on and no action started"))
    return checks


# --- gathering ------------------------------------------------------------------------------


class _PrometheusError(Exception):
    pass


def _get(base: str, path: str, params: dict[str, str] | None, timeout: float) -> Any:
    url = base.rstrip("/") + path
    try:
        response = requests.get(url, params=params, timeout=timeout)
    except requests.RequestException as exc:
        raise _PrometheusError(f"cannot reach {url} ({type(exc).__name__})") from None
    try:
        body = response.json()
    except ValueError:
        raise _PrometheusError(f"{url} answered HTTP {response.status_code} without JSON") from None
    if response.status_code != 200 or body.get("status") != "success":
        raise _PrometheusError(f"{url} answered HTTP {response.status_code}: {body.get('error', 'error')}")
    return body["data"]


def _promql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def canary_observe(
    *,
    prometheus_url: str,
    window: timedelta,
    expected: list[str],
    label: tuple[str, str] = ("service", "autoheal"),
    timeout: float = 10.0,
    now: datetime | None = None,
) -> CanaryObservation:
    """Ask Prometheus and the audit trail for the facts of the last ``window``."""
    now = now or timezone.now()
    since = now - window
    events = AuditEvent.objects.filter(ts__gte=since, ts__lte=now)
    per_alert = (
        events.filter(kind__in=["action_dry_run", "action_ok"])
        .exclude(alertname="")
        .values_list("kind", "alertname")
        .annotate(n=Count("id"))
    )
    counted: dict[str, dict[str, int]] = {"action_dry_run": {}, "action_ok": {}}
    for kind, alertname, n in per_alert:
        counted[kind][alertname] = n
    facts = {
        "window": window,
        "expected": tuple(expected),
        "label": label,
        "dry_run_events": counted["action_dry_run"],
        "ok_events": counted["action_ok"],
        "live_actions": events.filter(kind="action_started").count(),
        "dry_run_on": switch_effective(now=now).dry_run,
    }
    try:
        rules = _get(prometheus_url, "/api/v1/rules", None, timeout)
        alerts = _get(prometheus_url, "/api/v1/alerts", None, timeout)
        selector = f'alertstate="firing",{label[0]}={_promql_string(label[1])}'
        query = f"count by (alertname) (max_over_time(ALERTS{{{selector}}}[{_duration(window)}]))"
        fired = _get(prometheus_url, "/api/v1/query", {"query": query, "time": str(now.timestamp())}, timeout)
    except _PrometheusError as exc:
        return CanaryObservation(prometheus_error=str(exc), **facts)  # type: ignore[arg-type]
    parsed = tuple(
        Rule(
            name=str(rule.get("name", "")),
            type=str(rule.get("type", "")),
            health=str(rule.get("health", "unknown")),
            error=str(rule.get("lastError", "")),
            labels={str(k): str(v) for k, v in (rule.get("labels") or {}).items()},
        )
        for group in rules.get("groups", [])
        for rule in group.get("rules", [])
    )
    firing_now = sorted(
        {
            str(alert["labels"].get("alertname", ""))
            for alert in alerts.get("alerts", [])
            if alert.get("state") == "firing" and alert.get("labels", {}).get(label[0]) == label[1]
        }
    )
    fired_in_window = sorted({str(sample["metric"].get("alertname", "")) for sample in fired.get("result", [])})
    return CanaryObservation(
        rules=parsed,
        firing_now=tuple(firing_now),
        fired_in_window=tuple(fired_in_window),
        **facts,  # type: ignore[arg-type]
    )
