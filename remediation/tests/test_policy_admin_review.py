"""The policy page in the admin: "try this policy" touches nothing; the change history is shown."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import pytest

from audit.models import AuditEvent
from remediation.models import Alert, Job, Policy
from remediation.policies import policy_save

pytestmark = pytest.mark.django_db


def saved(actor: str = "alice", **fields: Any) -> Policy:
    data: dict[str, Any] = {
        "name": "restart-oom",
        "matchers": ['alertname="ContainerOOMKilled"', 'container=~"api|nginx"'],
        "action": "log_only",
        "target": "{{ labels.container }}",
    }
    data.update(fields)
    return policy_save(policy_data=data, actor=actor).policy


def text(answer: Any) -> str:
    return html.unescape(re.sub(r"\s+", " ", answer.content.decode()))


def test_the_policy_page_has_a_try_button(admin_client: Any) -> None:
    policy = saved()

    page = admin_client.get(f"/admin/remediation/policy/{policy.pk}/change/").content.decode()

    assert f'href="/admin/remediation/policy/{policy.pk}/try/"' in page
    assert "Try this policy" in page


def test_trying_a_payload_shows_the_decision_per_alert_and_touches_nothing(
    admin_client: Any, fixture_body: Callable[[str], bytes]
) -> None:
    policy = saved()
    events_before = AuditEvent.objects.count()

    answer = admin_client.post(
        f"/admin/remediation/policy/{policy.pk}/try/", {"payload": fixture_body("group-five-firing.json").decode()}
    )

    assert answer.status_code == 200
    page = text(answer)
    assert "Matches 2 of 5 alerts." in page
    # The simulator's verdict for each alert: the two containers the policy names would be handled.
    assert len(re.findall(r'class="verdict-run this-policy"', answer.content.decode())) == 2
    assert page.count("no_policy") >= 3
    assert "would log_only api" in page and "would log_only nginx" in page
    assert AuditEvent.objects.count() == events_before
    assert not Alert.objects.exists() and not Job.objects.exists()


def test_a_disabled_policy_says_it_would_not_run_but_what_it_would_match(
    admin_client: Any, fixture_body: Callable[[str], bytes]
) -> None:
    policy = saved(enabled=False)

    answer = admin_client.post(
        f"/admin/remediation/policy/{policy.pk}/try/", {"payload": fixture_body("group-five-firing.json").decode()}
    )

    page = text(answer)
    assert "This policy is disabled: it would not run." in page
    assert "Matches 2 of 5 alerts." in page


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "This is not JSON: Expecting property name enclosed in double quotes at line 1"),
        ("[]", "Paste the whole webhook body: a JSON object with an alerts list."),
        ('{"version": "4", "alerts": "x"}', "This is not an Alertmanager webhook v4 payload:"),
        ("", "This field is required."),
    ],
)
def test_a_bad_payload_is_refused_with_a_clear_message(admin_client: Any, payload: str, message: str) -> None:
    policy = saved()

    answer = admin_client.post(f"/admin/remediation/policy/{policy.pk}/try/", {"payload": payload})

    assert answer.status_code == 400
    assert message in text(answer)


def test_ops_users_cannot_reach_the_trial(client: Any) -> None:
    from django.contrib.auth.models import Group, User

    policy = saved()
    user = User.objects.create_user(username="viewer", password=None)
    user.groups.add(Group.objects.get_or_create(name="ops")[0])
    client.force_login(user)

    answer = client.post(f"/admin/remediation/policy/{policy.pk}/try/", {"payload": "{}"})

    assert answer.status_code == 302  # the admin sends non-staff users to its login
    assert "/try/" in answer["Location"]


def test_the_policy_page_shows_who_changed_what_and_when_across_a_rename(admin_client: Any) -> None:
    policy = saved(actor="alice")
    policy_save(policy_data={**_data(policy), "priority": 5, "name": "restart-oom-v2"}, actor="bob", instance=policy)

    page = text(admin_client.get(f"/admin/remediation/policy/{policy.pk}/change/"))

    history = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page[page.index("Change history") :]))
    assert re.search(r"bob updated \(admin\) .*name : restart-oom → restart-oom-v2", history)
    assert re.search(r"priority : 100 → 5", history)
    assert re.search(r"alice created \(admin\)", history)
    assert history.index("bob") < history.index("alice")  # newest first


def _data(policy: Policy) -> dict[str, Any]:
    from remediation.policies import policy_as_data

    return policy_as_data(policy)
