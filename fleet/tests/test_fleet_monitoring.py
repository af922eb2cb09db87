"""The fleet's alert rule: promtool's own test passes, and it names only series and pages that exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from fleet.metrics import FLEET_GAUGES
from observability.tests.test_monitoring_config import names_in

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "fleet.rules.yml"
TESTS = ROOT / "deploy" / "prometheus" / "tests" / "fleet.test.yml"


def _rules() -> list[dict[str, str]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


@pytest.mark.prometheus
def test_promtool_checks_the_rule_and_its_unit_test_passes() -> None:
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        ["promtool", "test", "rules", TESTS.name], cwd=TESTS.parent, capture_output=True, text=True, check=False
    )
    assert test.returncode == 0, test.stdout + test.stderr


def test_the_rule_names_only_fleet_series_and_an_existing_runbook() -> None:
    (rule,) = _rules()
    assert rule["alert"] == "AutohealAgentSilent"
    series, _ = names_in(rule["expr"])
    assert series <= set(FLEET_GAUGES), series - set(FLEET_GAUGES)
    page = re.search(r"docs/runbooks/[\w.-]+\.md", rule["annotations"]["runbook_url"])
    assert page is not None and (ROOT / page.group(0)).is_file()
    assert "agent-silent.md" in (ROOT / "docs" / "runbooks" / "README.md").read_text()
