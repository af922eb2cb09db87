"""`make run` loads the demo policy into an empty policy table only: a restart never undoes an edit."""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from audit.models import AuditEvent
from remediation.models import Policy

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
EDITED = """
policies:
  - name: restart-unhealthy
    description: ours
    matchers: ['alertname="ContainerUnhealthy"', 'team="payments"']
    action: restart_container
"""


def demo_setup() -> str:
    """Run the import command of the Makefile's `demo` recipe (what every `make run` runs first)."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t\$\(PY\) manage\.py (autoheal_policies import .*)$", makefile, re.MULTILINE)
    assert recipe, "the Makefile's demo target no longer imports the demo policy"
    out = io.StringIO()
    call_command(*shlex.split(recipe.group(1)), stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_demo_policy_is_loaded_into_an_empty_table() -> None:
    assert "restart-unhealthy: created" in demo_setup()
    assert Policy.objects.get().matchers == ['alertname="ContainerUnhealthy"']


def test_policy_edited_in_the_admin_survives_a_restart(admin_client: Any) -> None:
    demo_setup()
    policy = Policy.objects.get(name="restart-unhealthy")
    form = {
        "name": "restart-unhealthy",
        "enabled": "on",
        "description": "edited by an operator",
        "matchers": 'alertname="ContainerUnhealthy"\nenv="prod"',
        "action": "restart_container",
        "target": "{{ labels.container }}",
        "params": "{}",
        "cooldown_seconds": "60",
        "max_actions_per_hour": "3",
        "verify_within_seconds": "300",
        "priority": "100",
        "mode": "auto",
        "approval_timeout_seconds": "900",
        "when_silence_unknown": "act",
        "notify": "[]",
        "capture_evidence": "on",
        "_save": "Save",
    }
    assert admin_client.post(f"/admin/remediation/policy/{policy.pk}/change/", form).status_code == 302
    events = AuditEvent.objects.count()

    assert "not imported, policies already exist" in demo_setup()

    policy.refresh_from_db()
    assert policy.matchers == ['alertname="ContainerUnhealthy"', 'env="prod"']
    assert (policy.description, policy.cooldown_seconds) == ("edited by an operator", 60)
    assert AuditEvent.objects.count() == events


def test_policy_replaced_by_import_survives_a_restart(tmp_path: Path) -> None:
    demo_setup()
    edited = tmp_path / "policies.yaml"
    edited.write_text(EDITED)
    call_command("autoheal_policies", "import", str(edited), stdout=io.StringIO(), stderr=io.StringIO())

    demo_setup()

    policy = Policy.objects.get()
    assert policy.matchers == ['alertname="ContainerUnhealthy"', 'team="payments"']
    assert policy.description == "ours"


def test_an_operators_other_policy_keeps_the_demo_out(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(EDITED.replace("restart-unhealthy", "payments-restart"))
    call_command("autoheal_policies", "import", str(other), stdout=io.StringIO(), stderr=io.StringIO())

    demo_setup()

    assert list(Policy.objects.values_list("name", flat=True)) == ["payments-restart"]


@pytest.mark.django_db(transaction=True)
def test_make_demo_twice_keeps_an_edited_policy(tmp_path: Path) -> None:
    """The real `make demo` (migrate + demo import) on its own SQLite database, run twice."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOHEAL_", "DJANGO_"))}
    env.update({"DATABASE_URL": "", "AUTOHEAL_DATA_DIR": str(tmp_path)})
    venv = Path(sys.executable).parent.parent

    def make_demo() -> str:
        result = subprocess.run(
            ["make", "--no-print-directory", "demo", f"VENV={venv}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def manage(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "restart-unhealthy: created" in make_demo()
    edited = tmp_path / "policies.yaml"
    edited.write_text(EDITED)
    manage("autoheal_policies", "import", str(edited))

    assert "not imported" in make_demo()

    exported = manage("autoheal_policies", "export")
    assert 'team=\\"payments\\"' in exported or 'team="payments"' in exported
    assert "description: ours" in exported
