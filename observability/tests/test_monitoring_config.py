"""The shipped Prometheus rules and Grafana dashboard only name series that exist."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from observability.collector import metric_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "autoheal.rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "autoheal.json"
RUNBOOKS = ROOT / "docs" / "runbooks"

# Series Prometheus itself provides.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
FUNCTIONS = {
    "abs", "absent", "avg", "avg_over_time", "ceil", "changes", "clamp_min", "count", "count_over_time", "delta",
    "floor", "histogram_quantile", "increase", "irate", "label_replace", "label_values", "max", "max_over_time",
    "min", "min_over_time", "quantile", "rate", "round", "scalar", "sort", "sort_desc", "sum", "sum_over_time",
    "time", "topk", "vector",
}  # fmt: skip

NAME_MATCHER = re.compile(r'__name__\s*=~?\s*"([^"]*)"')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?")


def names_in(expr: str) -> tuple[set[str], set[str]]:
    """(series names, function names) used by a PromQL expression."""
    series = {name for match in NAME_MATCHER.finditer(expr) for name in match.group(1).split("|")}
    stripped = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    stripped = re.sub(r'"[^"]*"', "", stripped)  # strings (label_replace arguments)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # ranges
    stripped = GROUPING.sub("", stripped)
    stripped = re.sub(r"label_values\((.*),\s*\w+\s*\)", r"label_values(\1)", stripped)  # Grafana: label name
    functions = set()
    for match in IDENTIFIER.finditer(stripped):
        name, call = match.group(1), match.group(2)
        if call:
            functions.add(name)
        elif name not in KEYWORDS:
            series.add(name)
    return series, functions


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def known_series() -> set[str]:
    return metric_names() | recorded() | PROMETHEUS_SERIES


def dashboard_expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from dashboard_expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_expressions(item)


def test_expression_parser_finds_series_and_functions() -> None:
    series, functions = names_in(
        'histogram_quantile(0.95, max without (instance) (rate(x_bucket{job="a", le!="1"}[5m]))) > 0.2 '
        'and on (job) count({__name__=~"a_total|b_total"} offset 15m) or label_replace(y, "z", "$1", "w", "(.*)") '
        'or label_values(v{job="a"}, env)'
    )
    assert series == {"x_bucket", "a_total", "b_total", "y", "v"}
    assert functions == {"histogram_quantile", "max", "rate", "count", "label_replace", "label_values"}


def test_dashboard_is_served_at_d_autoheal_with_unique_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "autoheal"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(panel["title"] for panel in dashboard["panels"])
    for slo in ("Heartbeat", "failure rate", "Audit write p95", "Availability"):
        assert slo in titles


def test_every_dashboard_expression_names_a_metric_or_rule_that_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = list(dashboard_expressions(dashboard))
    assert len(expressions) >= 20
    known = known_series()
    used: set[str] = set()
    for expr in expressions:
        series, functions = names_in(expr)
        assert series, f"no series in {expr!r}"
        assert series <= known, f"{expr!r} names unknown series {sorted(series - known)}"
        assert functions <= FUNCTIONS, f"{expr!r} calls unknown functions {sorted(functions - FUNCTIONS)}"
        used |= series
    for rule in recorded():
        assert rule in used, f"recording rule {rule} is not on the dashboard"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r.get("alert") or r.get("record"))
def test_every_rule_names_existing_series_and_alerts_link_a_runbook(rule: dict[str, Any]) -> None:
    series, functions = names_in(rule["expr"])
    assert series <= known_series(), f"unknown series {sorted(series - known_series())}"
    assert functions <= FUNCTIONS
    if "alert" in rule:
        url = rule["annotations"]["runbook_url"]
        page = re.search(r"docs/runbooks/[\w-]+\.md", url)
        assert page, url
        assert (ROOT / page.group(0)).is_file(), f"{page.group(0)} does not exist"
        assert "summary" in rule["annotations"]


def test_the_seed_alerts_are_all_defined() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    for name in (
        "AutohealHeartbeatSLOBreach",
        "AutohealNoEvents15m",
        "AutohealFailureRateSLOBreach",
        "AutohealActionFailureSpike",
        "AutohealServiceDown",
        "AutohealAuditWriteLatencySLOBreach",
        "AutohealDisabledInDev",
        "AutohealStaleActions",
        "AutohealCircuitOpen",
    ):
        assert name in alerts
    assert alerts["AutohealHeartbeatSLOBreach"]["for"] == "10m"
    assert alerts["AutohealHeartbeatSLOBreach"]["labels"]["severity"] == "critical"
    assert alerts["AutohealFailureRateSLOBreach"]["for"] == "15m"
    assert alerts["AutohealActionFailureSpike"]["for"] == "10m"
    assert alerts["AutohealServiceDown"]["for"] == "2m"
    assert alerts["AutohealAuditWriteLatencySLOBreach"]["for"] == "10m"
    assert {"autoheal:cooldown_active", "autoheal:actions:rate_5m", "autoheal:heartbeat:age_seconds",
            "autoheal:action_fail_rate_15m"} <= recorded()  # fmt: skip
