"""The operator's allow-lists: what a policy (the admin role) can never widen.

Programs (``AUTOHEAL_COMMAND_ALLOW``), webhook URL prefixes (``AUTOHEAL_WEBHOOK_ACTION_ALLOW``,
narrowed only by ``params.allow``) and the environment variables a policy may read
(``AUTOHEAL_ACTION_SECRETS``) are refused at import, in the admin and again by the executor.
"""

from __future__ import annotations

import ipaddress
import shutil
from typing import Any

import pytest

from audit.models import AuditEvent
from remediation.executors import JobSpec, NotAllowed, command, webhook
from remediation.models import Policy
from remediation.policies import PolicyImportError, policies_import, policies_load_yaml
from remediation.tests.test_policies_admin import ADD, form
from remediation.trust import address_is_public, parse_url

COMMAND_POLICY = """
policies:
  - name: run-it
    matchers: ['alertname="X"']
    action: command
    params: {argv: ['%s', '{{ labels.container }}']}
"""
SECRET_POLICY = """
policies:
  - name: page
    matchers: ['alertname="X"']
    action: webhook
    params:
      url: https://hooks.example/page
      headers: {Authorization: {env: %s}}
"""


def _import_problems(text: str) -> list[str]:
    with pytest.raises(PolicyImportError) as caught:
        policies_import(documents=policies_load_yaml(text), actor="alice", dry_run=False)
    return list(caught.value.problems)


@pytest.mark.django_db
def test_a_program_outside_the_command_allow_list_is_refused_at_import_with_its_name(settings: Any) -> None:
    settings.AUTOHEAL_COMMAND_ALLOW = [shutil.which("true")]
    for program in ("/usr/bin/id", "id", "/bin/sh", "sh"):
        problems = _import_problems(COMMAND_POLICY % program)
        assert len(problems) == 1 and program in problems[0] and "AUTOHEAL_COMMAND_ALLOW" in problems[0]
    assert not Policy.objects.exists() and not AuditEvent.objects.exists()
    # By path or by bare name, an allowed program is accepted.
    policies_import(documents=policies_load_yaml(COMMAND_POLICY % "true"), actor="alice", dry_run=False)
    assert Policy.objects.get().params["argv"][0] == "true"


@pytest.mark.django_db
def test_nothing_may_run_while_the_command_allow_list_is_empty(settings: Any) -> None:
    settings.AUTOHEAL_COMMAND_ALLOW = []
    assert "AUTOHEAL_COMMAND_ALLOW" in _import_problems(COMMAND_POLICY % shutil.which("true"))[0]


@pytest.mark.django_db
def test_an_environment_variable_outside_the_secret_list_is_refused_at_import_with_its_name(settings: Any) -> None:
    settings.AUTOHEAL_ACTION_SECRETS = ["PAGER_KEY"]
    problems = _import_problems(SECRET_POLICY % "AUTOHEAL_WEBHOOK_TOKENS")
    assert len(problems) == 1
    assert "AUTOHEAL_WEBHOOK_TOKENS" in problems[0] and "AUTOHEAL_ACTION_SECRETS" in problems[0]
    assert not Policy.objects.exists()
    policies_import(documents=policies_load_yaml(SECRET_POLICY % "PAGER_KEY"), actor="alice", dry_run=False)
    assert Policy.objects.filter(name="page").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"action": "command", "params": '{"argv": ["/usr/bin/id"]}'}, "/usr/bin/id"),
        (
            {
                "action": "webhook",
                "params": '{"url": "https://hooks.example/x", "headers": {"A": {"env": "SECRET_KEY"}}}',
            },
            "SECRET_KEY",
        ),
        (
            {"action": "webhook", "params": '{"url": "https://evil.example/x", "allow": ["https://evil.example/"]}'},
            "evil",
        ),
    ],
)
def test_the_admin_refuses_what_the_operator_does_not_allow_naming_it(
    admin_client: Any, overrides: dict[str, Any], name: str
) -> None:
    response = admin_client.post(ADD, form(target="", **overrides))
    assert response.status_code == 200
    assert name in response.content.decode()
    assert not Policy.objects.exists()


@pytest.mark.django_db
def test_params_allow_only_narrows_the_operators_prefixes(settings: Any) -> None:
    settings.AUTOHEAL_WEBHOOK_ACTION_ALLOW = []
    widening = JobSpec(
        action="webhook", target="", params={"url": "http://127.0.0.1:9/x", "allow": ["http://127.0.0.1:9/"]}
    )
    with pytest.raises(NotAllowed, match="AUTOHEAL_WEBHOOK_ACTION_ALLOW"):
        webhook.check(widening)
    settings.AUTOHEAL_WEBHOOK_ACTION_ALLOW = ["http://127.0.0.1:9/"]
    webhook.check(widening)
    narrowed = JobSpec(
        action="webhook", target="", params={"url": "http://127.0.0.1:9/x", "allow": ["http://127.0.0.1:9/y/"]}
    )
    with pytest.raises(NotAllowed, match=r"params\.allow"):
        webhook.check(narrowed)


def test_allow_list_entries_are_parsed_urls_not_string_prefixes() -> None:
    no_slash = parse_url("http://127.0.0.1")
    assert no_slash.allows("http://127.0.0.1/anything")
    assert no_slash.allows("http://127.0.0.1:80/x")
    assert not no_slash.allows("http://127.0.0.1:6379/")
    assert not no_slash.allows("http://127.0.0.1.evil.example/")
    assert not no_slash.allows("https://127.0.0.1/")
    path = parse_url("https://hooks.example/team")
    assert path.allows("https://hooks.example/team") and path.allows("https://hooks.example/team/page")
    assert not path.allows("https://hooks.example/teamx") and not path.allows("https://hooks.example/")
    assert parse_url("https://HOOKS.example.").allows("https://hooks.example/x")
    assert parse_url("http://[::1]:8080/").allows("http://[0:0:0:0:0:0:0:1]:8080/x")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("100.64.0.1", False),  # shared address space (carrier-grade NAT)
        ("192.88.99.1", False),  # 6to4 relay anycast
        ("2002:7f00:1::1", False),  # 6to4, embedding 127.0.0.1
        ("64:ff9b::7f00:1", False),  # NAT64, embedding 127.0.0.1
        ("::127.0.0.1", False),  # IPv4-compatible IPv6
        ("::ffff:10.0.0.1", False),
        ("169.254.169.254", False),
        ("fd00::1", False),
        ("198.18.0.1", False),
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
    ],
)
def test_only_public_internet_addresses_count_as_external(address: str, public: bool) -> None:
    assert address_is_public(ipaddress.ip_address(address)) is public


def test_the_executors_refuse_again_at_run_time_whatever_was_stored(settings: Any, tmp_path: Any) -> None:
    # A policy stored before the operator narrowed the lists (or written to the database directly).
    settings.AUTOHEAL_COMMAND_ALLOW = [shutil.which("true")]
    marker = tmp_path / "ran"
    spec = JobSpec(action="command", target="", params={"argv": ["touch", str(marker)]})
    with pytest.raises(NotAllowed, match="touch"):
        command.check(spec)
    with pytest.raises(NotAllowed, match="AUTOHEAL_COMMAND_ALLOW"):
        command.execute(spec, timeout=5)
    assert not marker.exists()
    settings.AUTOHEAL_WEBHOOK_ACTION_ALLOW = ["http://127.0.0.1:9/"]
    settings.AUTOHEAL_ACTION_SECRETS = []
    stealing = JobSpec(
        action="webhook",
        target="",
        params={"url": "http://127.0.0.1:9/x", "headers": {"X": {"env": "AUTOHEAL_WEBHOOK_TOKENS"}}},
    )
    with pytest.raises(NotAllowed, match="AUTOHEAL_WEBHOOK_TOKENS"):
        webhook.execute(stealing, timeout=5)
