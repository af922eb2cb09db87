"""autoheal_simulate: what a payload would do today, and proof that it touches nothing."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from remediation.models import Alert, Job, Policy, Switch
from remediation.tests.exec_helpers import make_policy

pytestmark = pytest.mark.django_db


def snapshot() -> dict[str, list]:
    """Every row the engine and the audit trail hold."""
    return {
        model.__name__: list(model.objects.order_by("pk").values())
        for model in (Policy, Alert, Job, Switch, AuditEvent)
    }


def simulate(path: Path, *args: str) -> list[dict]:
    out = StringIO()
    call_command("autoheal_simulate", str(path), "--json", "--no-check", *args, stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def write(tmp_path: Path, body: bytes) -> Path:
    path = tmp_path / "payload.json"
    path.write_bytes(body)
    return path


def test_simulation_says_what_would_happen_and_changes_no_row(tmp_path, fixture_body):
    make_policy(name="restart-flagged", matchers=['alertname="AutohealTestFlag"'], action="restart_container")
    make_policy(name="note-it", matchers=['severity="critical"'], action="log_only", priority=200)
    path = write(tmp_path, fixture_body("single-firing.json"))
    before = snapshot()
    outcomes = simulate(path)
    assert snapshot() == before
    assert [(o["policy"], o["verdict"], o["target"]) for o in outcomes] == [
        ("restart-flagged", "run", "ah-sleeper"),
        ("note-it", "run", "ah-sleeper"),
    ]


def test_simulation_reports_each_guard_with_its_reason(tmp_path, fixture_body):
    from remediation import safety

    make_policy(name="restart-flagged", matchers=['alertname="AutohealTestFlag"'], action="restart_container")
    path = write(tmp_path, fixture_body("single-firing.json"))
    safety.switch_set(pause_minutes=10, actor="alice")
    before = snapshot()
    assert simulate(path)[0]["reason"] == "paused"
    safety_off = Switch.objects.get(pk=1)
    safety_off.paused_until = None
    safety_off.dry_run = True
    safety_off.save()
    before = snapshot()
    dry = simulate(path)[0]
    assert (dry["verdict"], dry["reason"]) == ("dry_run", "dry_run")
    assert snapshot() == before


def test_simulation_of_a_group_names_no_policy_and_resolved_alerts(tmp_path, fixture_body):
    path = write(tmp_path, fixture_body("group-five-mixed.json"))
    before = snapshot()
    outcomes = simulate(path)
    assert snapshot() == before
    verdicts = sorted(o["verdict"] for o in outcomes)
    assert verdicts == ["no_policy", "no_policy", "no_policy", "resolve", "resolve"]


def test_the_human_readable_output_names_policy_target_and_why(tmp_path, fixture_body):
    make_policy(name="restart-flagged", matchers=['alertname="AutohealTestFlag"'], action="restart_container")
    out = StringIO()
    call_command(
        "autoheal_simulate", str(write(tmp_path, fixture_body("single-firing.json"))), "--no-check", stdout=out
    )
    assert "AutohealTestFlag ecf68c16ba2afc4f | restart-flagged: restart_container ah-sleeper | RUN" in out.getvalue()


def test_a_bad_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="not JSON"):
        simulate(write(tmp_path, b"{nope"))
    with pytest.raises(CommandError, match="not an Alertmanager webhook v4 payload"):
        simulate(write(tmp_path, b'{"version": "4", "alerts": "x"}'))
    with pytest.raises(CommandError, match="cannot read"):
        simulate(tmp_path / "missing.json")


@pytest.mark.docker
def test_simulation_checks_the_container_opt_in_read_only(tmp_path, fixture_json, make_container, docker_settings):
    from conftest import started_at

    container = make_container(labels={"team": "web"})
    payload = fixture_json("single-firing.json")
    payload["alerts"][0]["labels"]["container"] = container.name
    make_policy(name="restart-flagged", matchers=['alertname="AutohealTestFlag"'], action="restart_container")
    path = write(tmp_path, json.dumps(payload).encode())
    before = started_at(container)
    out = StringIO()
    call_command("autoheal_simulate", str(path), "--json", stdout=out)
    outcome = json.loads(out.getvalue().splitlines()[0])
    assert (outcome["verdict"], outcome["reason"]) == ("skip", "not_allowed")
    assert started_at(container) == before
