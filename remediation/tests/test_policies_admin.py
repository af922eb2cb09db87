"""The policy admin: validation messages a person can act on; every save audited with a diff."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from remediation.models import Alert, Job, Policy

pytestmark = pytest.mark.django_db

ADD = "/admin/remediation/policy/add/"


def form(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "restart-unhealthy",
        "enabled": "on",
        "description": "",
        "matchers": 'alertname="ContainerUnhealthy"\nseverity=~"critical|page"',
        "action": "restart_container",
        "target": "{{ labels.container }}",
        "params": "{}",
        "cooldown_seconds": "300",
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
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"matchers": 'alertname="X"\nseverity=~"(critical"'}, "invalid regular expression"),
        ({"matchers": "alertname"}, "not a matcher; write name=value"),
        ({"target": "{{ labels.container | upper }}"}, "only {{ labels.NAME }} placeholders are allowed"),
        ({"target": "{{ annotations.summary }}"}, "only {{ labels.NAME }} placeholders are allowed"),
        ({"target": ""}, "needs a target naming the container"),
        ({"action": "webhook", "params": '{"headers": {}}'}, "webhook needs url"),
        ({"params": '{"timeout": 5}'}, "restart_container does not take timeout"),
        ({"action": "command", "params": '{"argv": "restart.sh"}'}, "command needs argv"),
    ],
)
def test_invalid_policy_is_refused_with_an_actionable_message(
    admin_client: Any, overrides: dict[str, Any], message: str
) -> None:
    response = admin_client.post(ADD, form(**overrides))
    assert response.status_code == 200
    assert message in response.content.decode().replace("&quot;", '"').replace("&#x27;", "'")
    assert not Policy.objects.exists()
    assert not AuditEvent.objects.exists()


def test_saving_in_the_admin_is_audited_with_the_actor_and_a_diff(admin_client: Any) -> None:
    response = admin_client.post(ADD, form())
    assert response.status_code == 302
    policy = Policy.objects.get()
    assert policy.matchers == ['alertname="ContainerUnhealthy"', 'severity=~"critical|page"']
    created = AuditEvent.objects.get(kind="policy_changed")
    assert (created.actor, created.policy, created.data["operation"]) == ("admin", "restart-unhealthy", "created")

    change = f"/admin/remediation/policy/{policy.pk}/change/"
    page = admin_client.get(change).content.decode()
    assert "severity=~&quot;critical|page&quot;" in page  # one matcher per line in the form
    assert admin_client.post(change, form(priority="5", matchers='alertname="ContainerUnhealthy"')).status_code == 302
    updated = AuditEvent.objects.filter(kind="policy_changed").order_by("-id").first()
    assert updated is not None
    assert updated.data["operation"] == "updated"
    assert updated.data["changes"] == {
        "matchers": {
            "old": ['alertname="ContainerUnhealthy"', 'severity=~"critical|page"'],
            "new": ['alertname="ContainerUnhealthy"'],
        },
        "priority": {"old": 100, "new": 5},
    }
    # Saving without a change writes no event.
    admin_client.post(change, form(priority="5", matchers='alertname="ContainerUnhealthy"'))
    assert AuditEvent.objects.filter(kind="policy_changed").count() == 2


def test_deleting_in_the_admin_is_audited(admin_client: Any) -> None:
    admin_client.post(ADD, form())
    policy = Policy.objects.get()
    response = admin_client.post(f"/admin/remediation/policy/{policy.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Policy.objects.exists()
    deleted = AuditEvent.objects.filter(kind="policy_changed").order_by("-id").first()
    assert deleted is not None
    assert (deleted.data["operation"], deleted.actor) == ("deleted", "admin")


def test_alerts_and_jobs_are_read_only_in_the_admin(admin_client: Any) -> None:
    assert admin_client.get("/admin/remediation/alert/").status_code == 200
    assert admin_client.get("/admin/remediation/job/").status_code == 200
    assert admin_client.get("/admin/remediation/alert/add/").status_code == 403
    assert admin_client.get("/admin/remediation/job/add/").status_code == 403
    assert Alert.objects.count() == 0 and Job.objects.count() == 0
