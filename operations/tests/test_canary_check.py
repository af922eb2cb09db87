"""manage.py autoheal_canary_check against a real Prometheus evaluating a tiny Autoheal rules file."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from audit.services import audit_record
from operations.canary import CanaryObservation, Rule, canary_evaluate

GREEN_RULES = """
groups:
  - name: autoheal
    rules:
      - record: autoheal:heartbeat:age_seconds
        expr: vector(3)
      - alert: AutohealHeartbeatStale
        expr: autoheal:heartbeat:age_seconds > 300
        labels: {service: autoheal, severity: page}
      - alert: AutohealDown
        expr: vector(0) > 1
        labels: {service: autoheal, severity: page}
"""

RED_RULES = """
groups:
  - name: autoheal
    rules:
      - record: autoheal:heartbeat:age_seconds
        expr: vector(900)
      - alert: AutohealHeartbeatStale
        expr: autoheal:heartbeat:age_seconds > 300
        labels: {service: autoheal, severity: page}
      - alert: SomebodyElsesAlert
        expr: vector(1)
        labels: {service: billing}
"""


def all_rules_evaluated(prom) -> bool:
    rules = [rule for group in prom.api("/api/v1/rules")["groups"] for rule in group["rules"]]
    return bool(rules) and all(rule["health"] == "ok" for rule in rules)


def run_canary(*args: str) -> str:
    out = StringIO()
    call_command("autoheal_canary_check", *args, stdout=out)
    return out.getvalue()


@pytest.mark.prometheus
@pytest.mark.django_db
def test_canary_passes_when_slos_are_green_and_expected_dry_runs_happened(prometheus, settings):
    settings.AUTOHEAL_DRY_RUN = True
    prom = prometheus(GREEN_RULES)
    prom.wait_for(lambda: all_rules_evaluated(prom), "the rules to be evaluated")
    audit_record(kind="action_dry_run", alertname="ContainerUnhealthy", target="web-1", policy="restart-unhealthy")
    audit_record(kind="action_dry_run", alertname="DiskAlmostFull", target="db", policy="clean-tmp")

    out = run_canary("--prometheus", prom.url, "--window", "1h", "--expect", "ContainerUnhealthy", "DiskAlmostFull")

    assert "canary check passed" in out
    assert "FAIL" not in out
    assert '2 alerting rules with service="autoheal", 1 autoheal:* recording rules' in out


@pytest.mark.prometheus
@pytest.mark.django_db
def test_canary_fails_with_reasons_when_an_autoheal_alert_fires_and_dry_runs_are_missing(prometheus, settings):
    settings.AUTOHEAL_DRY_RUN = True
    prom = prometheus(RED_RULES)
    prom.wait_for(
        lambda: bool(prom.api('/api/v1/query?query=ALERTS{alertstate="firing",service="autoheal"}')["result"]),
        "AutohealHeartbeatStale to fire and be recorded",
    )
    audit_record(kind="action_dry_run", alertname="ContainerUnhealthy", target="web-1")
    audit_record(kind="action_started", alertname="ContainerUnhealthy", target="web-1")

    with pytest.raises(CommandError) as failure:
        run_canary("--prometheus", prom.url, "--window", "1h", "--expect", "ContainerUnhealthy", "DiskAlmostFull")

    reasons = str(failure.value)
    assert "firing now: AutohealHeartbeatStale" in reasons
    assert "fired in the last 1h: AutohealHeartbeatStale" in reasons
    assert "SomebodyElsesAlert" not in reasons  # only Autoheal's own alerts count
    assert "no action_dry_run event in the last 1h for DiskAlmostFull" in reasons
    assert "1 action_started events in the last 1h while dry-run is on" in reasons


@pytest.mark.prometheus
@pytest.mark.django_db
def test_canary_fails_when_prometheus_has_no_autoheal_rules(prometheus):
    prom = prometheus("groups: []\n")
    audit_record(kind="action_dry_run", alertname="ContainerUnhealthy")
    with pytest.raises(CommandError, match='no alerting rule labelled service="autoheal" is loaded'):
        run_canary("--prometheus", prom.url)


@pytest.mark.django_db
def test_canary_fails_when_prometheus_cannot_be_reached():
    audit_record(kind="action_dry_run", alertname="ContainerUnhealthy")
    # Port 9 (discard) on loopback: nothing listens there, so the connection is refused at once.
    with pytest.raises(
        CommandError, match=re.escape("prometheus reachable: cannot reach http://127.0.0.1:9/api/v1/rules")
    ):
        run_canary("--prometheus", "http://127.0.0.1:9", "--timeout", "2")


@pytest.mark.django_db
def test_canary_refuses_bad_arguments_clearly():
    with pytest.raises(CommandError, match="--window"):
        run_canary("--prometheus", "http://127.0.0.1:9", "--window", "yesterday")
    with pytest.raises(CommandError, match="name=value"):
        run_canary("--prometheus", "http://127.0.0.1:9", "--alert-label", "autoheal")
    with pytest.raises(CommandError, match="http:// or https://"):
        run_canary("--prometheus", "127.0.0.1:9090")


def green(**fields):
    values = {
        "window": timedelta(hours=72),
        "expected": ("ContainerUnhealthy",),
        "label": ("service", "autoheal"),
        "rules": (Rule("AutohealDown", "alerting", "ok", "", {"service": "autoheal"}),),
    }
    values.update(fields)
    return CanaryObservation(**values)


def failed(checks):
    return {check.name: check.detail for check in checks if not check.ok}


def test_after_going_live_successful_real_actions_count_for_the_expected_alerts():
    live = green(dry_run_on=False, ok_events={"ContainerUnhealthy": 3}, live_actions=3)
    assert failed(canary_evaluate(observation=live)) == {}


def test_in_the_canary_real_actions_do_not_stand_in_for_dry_run_events():
    canary = green(dry_run_on=True, ok_events={"ContainerUnhealthy": 1}, live_actions=1)
    problems = failed(canary_evaluate(observation=canary))
    assert "no action_dry_run event in the last 3d for ContainerUnhealthy" in problems["expected dry-run events"]
    assert problems["nothing ran for real"] == "1 action_started events in the last 3d while dry-run is on"


def test_a_rule_that_fails_to_evaluate_fails_the_canary():
    broken = green(
        dry_run_events={"ContainerUnhealthy": 1},
        rules=(
            Rule("AutohealDown", "alerting", "ok", "", {"service": "autoheal"}),
            Rule("autoheal:heartbeat:age_seconds", "recording", "err", "many-to-many matching not allowed", {}),
        ),
    )
    problems = failed(canary_evaluate(observation=broken))
    assert problems == {"rules evaluate": "autoheal:heartbeat:age_seconds: many-to-many matching not allowed"}


@pytest.mark.prometheus
@pytest.mark.django_db
def test_canary_recognises_the_shipped_rules_of_deploy_prometheus(prometheus, settings):
    settings.AUTOHEAL_DRY_RUN = True
    rules = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules" / "autoheal.rules.yml"
    prom = prometheus(rules.read_text(encoding="utf-8"))
    prom.wait_for(lambda: all_rules_evaluated(prom), "the shipped rules to be evaluated")
    audit_record(kind="action_dry_run", alertname="ContainerUnhealthy", target="web-1")

    out = run_canary("--prometheus", prom.url, "--window", "1h", "--expect", "ContainerUnhealthy")

    # Every alert of the pack carries service="autoheal" except the always-firing heartbeat, which
    # must not count against the canary; right after start none of the SLO alerts fires yet.
    assert "canary check passed" in out
    assert "4 autoheal:* recording rules" in out
