"""Policies as code: YAML import/export via manage.py autoheal_policies."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditEvent
from remediation.models import Policy
from remediation.policies import policies_import, policies_load_yaml

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy" / "policies" / "demo.yaml"

TWO_POLICIES = """
policies:
  - name: restart-unhealthy
    matchers: ['alertname="ContainerUnhealthy"', 'severity=~"critical|page"', 'env!="dev"']
    action: restart_container
  - name: page-webhook
    description: Tell the pager
    matchers: ['severity="page"']
    action: webhook
    target: ""
    params: {url: "https://pager.example/hook", headers: {X-Team: ops}, timeout_seconds: 5}
    cooldown_seconds: 60
    priority: 10
    dry_run: true
"""


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("autoheal_policies", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def write(tmp_path: Path, text: str, name: str = "policies.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_demo_policy_imports_and_reimport_changes_nothing() -> None:
    assert "restart-unhealthy: created" in run("import", str(DEMO))
    policy = Policy.objects.get()
    assert (policy.action, policy.target, policy.matchers) == (
        "restart_container",
        "{{ labels.container }}",
        ['alertname="ContainerUnhealthy"'],
    )
    events = AuditEvent.objects.count()
    assert "restart-unhealthy: unchanged" in run("import", str(DEMO))
    assert AuditEvent.objects.count() == events


def test_missing_fields_take_the_documented_defaults(tmp_path: Path) -> None:
    run("import", write(tmp_path, TWO_POLICIES))
    policy = Policy.objects.get(name="restart-unhealthy")
    assert policy.enabled is True
    assert policy.target == "{{ labels.container }}"
    assert (policy.cooldown_seconds, policy.max_actions_per_hour, policy.verify_within_seconds) == (300, 3, 300)
    assert (policy.priority, policy.dry_run, policy.params) == (100, False, {})


def test_export_then_import_round_trips_exactly(tmp_path: Path) -> None:
    run("import", write(tmp_path, TWO_POLICIES))
    exported = run("export")
    before = list(Policy.objects.order_by("name").values())
    # Exported by priority, with every field, and importing it back changes nothing.
    document = yaml.safe_load(exported)
    assert [p["name"] for p in document["policies"]] == ["page-webhook", "restart-unhealthy"]
    assert "0 created, 0 updated, 2 unchanged" in run("import", write(tmp_path, exported, "exported.yaml"))
    # Into an empty database it recreates the same policies.
    Policy.objects.all().delete()
    run("import", write(tmp_path, exported, "exported.yaml"))
    after = list(Policy.objects.order_by("name").values())
    ignore = {"id", "created_at", "updated_at"}
    assert [{k: v for k, v in p.items() if k not in ignore} for p in after] == [
        {k: v for k, v in p.items() if k not in ignore} for p in before
    ]


def test_export_to_a_file(tmp_path: Path) -> None:
    run("import", str(DEMO))
    target = tmp_path / "out.yaml"
    run("export", str(target))
    assert yaml.safe_load(target.read_text())["policies"][0]["name"] == "restart-unhealthy"


def test_update_by_name_audits_only_the_changed_fields_with_the_actor(tmp_path: Path) -> None:
    run("import", write(tmp_path, TWO_POLICIES))
    changed = TWO_POLICIES.replace("cooldown_seconds: 60", "cooldown_seconds: 120")
    output = run("import", write(tmp_path, changed), "--actor", "ci:deploy")
    assert "page-webhook: updated" in output
    assert "cooldown_seconds: 60 -> 120" in output
    event = AuditEvent.objects.filter(kind="policy_changed").order_by("-id").first()
    assert event is not None
    assert (event.policy, event.actor) == ("page-webhook", "ci:deploy")
    assert event.data["operation"] == "updated"
    assert event.data["changes"] == {"cooldown_seconds": {"old": 60, "new": 120}}
    assert Policy.objects.get(name="page-webhook").cooldown_seconds == 120


def test_dry_run_shows_the_change_and_changes_nothing(tmp_path: Path) -> None:
    run("import", write(tmp_path, TWO_POLICIES))
    events = AuditEvent.objects.count()
    changed = TWO_POLICIES.replace("priority: 10", "priority: 20")
    output = run("import", write(tmp_path, changed), "--dry-run")
    assert "page-webhook: would be updated" in output
    assert "priority: 10 -> 20" in output
    assert "dry run: nothing was changed" in output
    assert Policy.objects.get(name="page-webhook").priority == 10
    assert AuditEvent.objects.count() == events


BAD = """
policies:
  - name: fine-policy
    matchers: ['alertname="A"']
    action: log_only
    target: ""
  - name: restart-unhealthy
    matchers: ['severity=~"("', 'env!="dev"']
    action: restart_container
    target: "{{ annotations.container }}"
    cooldown_seconds: -1
  - name: bad-action
    matchers: ['alertname="B"']
    action: reboot_host
    maches: typo
  - name: fine-policy
    matchers: ['alertname="C"']
    action: log_only
"""


def test_a_bad_file_changes_nothing_and_lists_every_problem(tmp_path: Path) -> None:
    run("import", write(tmp_path, TWO_POLICIES))
    before = list(Policy.objects.order_by("name").values())
    events = AuditEvent.objects.count()
    with pytest.raises(CommandError) as caught:
        run("import", write(tmp_path, BAD))
    message = str(caught.value)
    assert "nothing imported" in message
    assert (
        "policies[1] (restart-unhealthy): matchers: matchers[0]: 'severity=~\"(\"': invalid regular expression"
        in message
    )
    assert "policies[1] (restart-unhealthy): target:" in message
    assert "only {{ labels.NAME }} placeholders are allowed" in message
    assert "policies[1] (restart-unhealthy): cooldown_seconds: must be between 0" in message
    assert "policies[2] (bad-action): action: must be one of" in message
    assert "policies[2] (bad-action): maches: unknown field" in message
    assert "policies[3] (fine-policy): the name 'fine-policy' is also used by policies[0]" in message
    assert list(Policy.objects.order_by("name").values()) == before
    assert not Policy.objects.filter(name="fine-policy").exists()
    assert AuditEvent.objects.count() == events


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("policies: [\n  - name: x\n  bad", "not valid YAML at line"),
        ("- name: x\n", "must be a mapping with one key, policies"),
        ("policies: {name: x}\n", "policies must be a list"),
        (
            "policies:\n  - name: w\n    matchers: ['a=\"b\"']\n    action: webhook\n    target: ''\n",
            "webhook needs url",
        ),
        (
            "policies:\n  - name: c\n    matchers: ['a=\"b\"']\n    action: command\n    params: {argv: ['x', '{{ labels.a | e }}']}\n",
            "argv[1]",
        ),
        (
            "policies:\n  - name: d\n    matchers: ['a=\"b\"']\n    action: stop_container\n    target: ''\n",
            "needs a target naming the container",
        ),
        (
            "policies:\n  - name: u\n    matchers: ['a=b']\n    action: webhook\n    target: ''\n"
            "    params: {url: 'https://user:pw@hooks.example/x'}\n",
            "url must not carry credentials",
        ),
        (
            "policies:\n  - name: h\n    matchers: ['a=b']\n    action: webhook\n    target: ''\n"
            "    params: {url: 'https://hooks.example/x', headers: {Authorization: {file: /x}}}\n",
            "headers must map header names to a one-line string or {env: VARIABLE_NAME}",
        ),
        (
            "policies:\n  - name: a0\n    matchers: ['a=b']\n    action: command\n    target: ''\n"
            "    params: {argv: ['{{ labels.a }}']}\n",
            "argv[0] must be the literal program",
        ),
        (
            "policies:\n  - name: st\n    matchers: ['a=b']\n    action: restart_container\n"
            "    params: {stop_timeout_seconds: 900}\n",
            "stop_timeout_seconds must be a whole number from 0 to 300",
        ),
        (
            "policies:\n  - name: to\n    matchers: ['a=b']\n    action: restart_container\n"
            "    params: {timeout_seconds: 0}\n",
            "timeout_seconds must be a number of seconds above 0",
        ),
        ("policies:\n  - name: e\n    matchers: []\n    action: log_only\n", "matchers: is required"),
        ("policies:\n  - name: 'has space'\n    matchers: ['a=b']\n    action: log_only\n", "name: must be"),
        (
            "policies:\n  - name: f\n    matchers: ['a=b']\n    action: log_only\n    enabled: 'yes'\n",
            "enabled: must be",
        ),
    ],
)
def test_invalid_documents_are_refused_with_a_clear_message(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CommandError, match="nothing imported") as caught:
        run("import", write(tmp_path, text))
    assert message in str(caught.value)
    assert not Policy.objects.exists()


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"cannot read .*missing\.yaml"):
        run("import", str(tmp_path / "missing.yaml"))


def test_service_import_is_idempotent_and_audits_created_policies() -> None:
    documents = policies_load_yaml(TWO_POLICIES)
    first = policies_import(documents=documents, actor="alice")
    assert sorted(first.created) == ["page-webhook", "restart-unhealthy"]
    created = AuditEvent.objects.filter(kind="policy_changed")
    assert created.count() == 2
    assert {e.actor for e in created} == {"alice"}
    assert all(e.data["operation"] == "created" for e in created)
    second = policies_import(documents=documents, actor="alice")
    assert not second.changed
    assert AuditEvent.objects.filter(kind="policy_changed").count() == 2


def test_command_exits_non_zero_on_a_bad_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["AUTOHEAL_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "manage.py", "autoheal_policies", "import", write(tmp_path, BAD)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "nothing imported" in result.stderr
    assert "invalid regular expression" in result.stderr


def test_webhook_header_secrets_never_reach_the_audit_trail(tmp_path: Path) -> None:
    text = """
policies:
  - name: pager
    matchers: ['severity="page"']
    action: webhook
    target: ""
    params:
      url: https://pager.example/hook
      allow: ['https://pager.example/']
      headers: {Authorization: Bearer s3cr3t-literal, X-Api-Key: {env: PAGER_KEY}}
"""
    run("import", write(tmp_path, text))
    policy = Policy.objects.get()
    assert policy.params["headers"]["X-Api-Key"] == {"env": "PAGER_KEY"}
    run("import", write(tmp_path, text.replace("s3cr3t-literal", "n3w-s3cr3t")))
    assert Policy.objects.get().params["headers"]["Authorization"] == "Bearer n3w-s3cr3t"
    trail = [json.dumps(e.as_dict()) for e in AuditEvent.objects.filter(kind="policy_changed")]
    assert len(trail) == 2
    assert not any("s3cr3t" in line for line in trail)
    assert all("[redacted]" in line and "PAGER_KEY" in line for line in trail)
