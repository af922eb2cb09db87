"""Intake: real Alertmanager deliveries become incidents, queued jobs and audit events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from audit.models import AuditEvent
from remediation.intake import alert_ingest
from remediation.models import Alert, Job, Policy

pytestmark = pytest.mark.django_db

TOKEN = "intake-test-token"
FIXTURES = [
    "single-firing.json",
    "single-resolved.json",
    "bearer-firing.json",
    "group-five-firing.json",
    "group-five-mixed.json",
    "group-five-resolved.json",
    "truncated-firing.json",
]


@pytest.fixture(autouse=True)
def _token(settings: Any) -> None:
    settings.AUTOHEAL_WEBHOOK_TOKENS = [TOKEN]


@pytest.fixture
def deliver(client: Any, fixture_body: Callable[[str], bytes]) -> Callable[[str], Any]:
    def post(name: str) -> Any:
        return client.post(
            "/alert", data=fixture_body(name), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
        )

    return post


def kinds(**filters: Any) -> list[str]:
    return list(AuditEvent.objects.filter(**filters).order_by("id").values_list("kind", flat=True))


def make_policy(name: str, matchers: list[str], **fields: Any) -> Policy:
    return Policy.objects.create(
        name=name, matchers=matchers, action=fields.pop("action", "restart_container"), **fields
    )


@pytest.mark.parametrize("name", FIXTURES)
def test_every_real_delivery_is_accepted_and_stored(
    name: str, deliver: Callable[[str], Any], fixture_json: Callable[[str], dict[str, Any]]
) -> None:
    response = deliver(name)
    assert response.status_code == 202, response.content
    alerts = fixture_json(name)["alerts"]
    assert response.json() == {"accepted": len(alerts), "duplicates": 0, "jobs": 0}
    assert Alert.objects.count() == len(alerts)
    for sent in alerts:
        row = Alert.objects.get(fingerprint=sent["fingerprint"])
        assert row.status == sent["status"]
        assert row.labels == sent["labels"]
        assert row.deliveries == 1


def test_nanosecond_start_and_unset_end_are_read_as_alertmanager_means_them(deliver: Callable[[str], Any]) -> None:
    deliver("bearer-firing.json")
    row = Alert.objects.get()
    assert row.starts_at == datetime(2026, 11, 27, 11, 3, 46, 787752, tzinfo=UTC)
    assert row.ends_at is None


def test_first_firing_delivery_queues_one_job_with_policy_snapshot(deliver: Callable[[str], Any]) -> None:
    policy = make_policy(
        "restart-flagged",
        ['alertname="AutohealTestFlag"', 'severity=~"critical|page"'],
        params={"timeout_seconds": 20},
        dry_run=True,
    )
    response = deliver("single-firing.json")
    assert response.json() == {"accepted": 1, "duplicates": 0, "jobs": 1}
    job = Job.objects.get()
    assert (job.policy, job.policy_name, job.action, job.target) == (
        policy,
        policy.name,
        "restart_container",
        "ah-sleeper",
    )
    assert job.params == {"timeout_seconds": 20}
    assert job.dry_run is True
    assert job.state == Job.State.QUEUED
    assert job.alert.fingerprint == "ecf68c16ba2afc4f"
    assert kinds() == ["alert_received", "action_queued"]
    queued = AuditEvent.objects.get(kind="action_queued")
    assert (queued.policy, queued.target, queued.actor) == ("restart-flagged", "ah-sleeper", "alertmanager")
    assert queued.data["job"] == job.pk


def test_duplicate_delivery_creates_no_second_incident_and_no_second_job(deliver: Callable[[str], Any]) -> None:
    make_policy("restart-flagged", ['alertname="AutohealTestFlag"'])
    deliver("single-firing.json")
    again = deliver("single-firing.json")
    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicates": 1, "jobs": 0}
    assert Alert.objects.count() == 1
    assert Job.objects.count() == 1
    assert Alert.objects.get().deliveries == 2
    assert kinds() == ["alert_received", "action_queued", "alert_duplicate"]


def test_repeats_are_counted_exactly_and_audited_at_doubling_intervals(deliver: Callable[[str], Any]) -> None:
    for _ in range(10):
        deliver("single-firing.json")
    row = Alert.objects.get()
    assert row.deliveries == 10
    repeats = AuditEvent.objects.filter(kind="alert_duplicate").order_by("id")
    assert [e.data["deliveries"] for e in repeats] == [2, 3, 5, 9]


def test_resolved_delivery_closes_the_incident_and_creates_no_job(deliver: Callable[[str], Any]) -> None:
    make_policy("restart-flagged", ['alertname="AutohealTestFlag"'])
    deliver("single-firing.json")
    response = deliver("single-resolved.json")
    assert response.json() == {"accepted": 1, "duplicates": 0, "jobs": 0}
    row = Alert.objects.get()
    assert row.status == Alert.Status.RESOLVED
    assert row.ends_at == datetime(2026, 11, 27, 11, 3, 36, 362000, tzinfo=UTC)
    assert row.resolved_at is not None
    assert Job.objects.count() == 1
    assert kinds()[-1] == "alert_resolved"


def test_resolved_alert_seen_first_never_creates_a_job(deliver: Callable[[str], Any]) -> None:
    make_policy("restart-flagged", ['alertname="AutohealTestFlag"'])
    deliver("single-resolved.json")
    assert Job.objects.count() == 0
    assert Alert.objects.get().status == Alert.Status.RESOLVED
    assert kinds() == ["alert_received", "alert_resolved"]


def test_stale_firing_after_resolved_does_not_reopen_the_incident(deliver: Callable[[str], Any]) -> None:
    make_policy("restart-flagged", ['alertname="AutohealTestFlag"'])
    deliver("single-firing.json")
    deliver("single-resolved.json")
    response = deliver("single-firing.json")
    assert response.json() == {"accepted": 0, "duplicates": 1, "jobs": 0}
    row = Alert.objects.get()
    assert row.status == Alert.Status.RESOLVED
    assert Job.objects.count() == 1
    stale = AuditEvent.objects.filter(kind="alert_duplicate").get()
    assert stale.data["stale"] is True
    assert "stays resolved" in stale.message


def test_group_with_resolved_members_queues_jobs_only_for_firing_ones(deliver: Callable[[str], Any]) -> None:
    make_policy("restart-oom", ['alertname="ContainerOOMKilled"'])
    response = deliver("group-five-mixed.json")
    assert response.json() == {"accepted": 5, "duplicates": 0, "jobs": 3}
    assert sorted(Job.objects.values_list("target", flat=True)) == ["nginx", "redis", "sidecar"]
    assert sorted(Alert.objects.filter(status="resolved").values_list("labels__container", flat=True)) == [
        "api",
        "worker",
    ]
    # The group's last delivery closes the three still open, and queues nothing.
    final = deliver("group-five-resolved.json")
    assert final.json() == {"accepted": 3, "duplicates": 0, "jobs": 0}
    assert Alert.objects.filter(status="firing").count() == 0
    assert Job.objects.count() == 3


def test_truncated_delivery_is_recorded_with_the_count(deliver: Callable[[str], Any]) -> None:
    deliver("truncated-firing.json")
    event = AuditEvent.objects.get(kind="alert_truncated")
    assert event.data["truncated"] == 4
    assert event.data["received"] == 2
    assert event.alertname == "HighLatency"


def test_alert_matching_no_policy_is_audited_as_no_policy(deliver: Callable[[str], Any]) -> None:
    make_policy("other", ['alertname="SomethingElse"'])
    make_policy("off", ['alertname="AutohealTestFlag"'], enabled=False)
    deliver("single-firing.json")
    assert Job.objects.count() == 0
    assert kinds() == ["alert_received", "no_policy"]


def test_policy_whose_target_label_is_missing_queues_nothing_and_says_why(deliver: Callable[[str], Any]) -> None:
    make_policy("by-pod", ['alertname="AutohealTestFlag"'], target="{{ labels.pod }}")
    response = deliver("single-firing.json")
    assert response.json()["jobs"] == 0
    skipped = AuditEvent.objects.get(kind="action_skipped")
    assert skipped.policy == "by-pod"
    assert skipped.data["reason"] == "not_allowed"
    assert skipped.data["missing_label"] == "pod"
    assert "no label 'pod'" in skipped.data["error"]
    assert not AuditEvent.objects.filter(kind="no_policy").exists()


def test_several_matching_policies_each_queue_a_job(deliver: Callable[[str], Any]) -> None:
    make_policy("log-it", ['alertname="AutohealTestFlag"'], action="log_only", target="", priority=5)
    make_policy("restart", ['alertname="AutohealTestFlag"'], priority=50)
    deliver("single-firing.json")
    assert list(Job.objects.order_by("id").values_list("policy_name", "target")) == [
        ("log-it", ""),
        ("restart", "ah-sleeper"),
    ]


def test_ingest_cost_does_not_grow_with_the_number_of_alerts(
    fixture_json: Callable[[str], dict[str, Any]], django_assert_num_queries: Any
) -> None:
    make_policy("restart-oom", ['alertname=~"ContainerOOMKilled|AutohealTestFlag"'])
    payload = fixture_json("single-firing.json")
    alert_ingest(
        payload={**payload, "alerts": [{**payload["alerts"][0], "fingerprint": "f" * 16}]}
    )  # reads the policies
    with CaptureQueriesContext(connection) as one:
        alert_ingest(payload=fixture_json("single-firing.json"))
    with django_assert_num_queries(len(one.captured_queries)):
        result = alert_ingest(payload=fixture_json("group-five-firing.json"))
    assert result.jobs == 5
    # Repeats are cheaper still, and just as flat.
    with CaptureQueriesContext(connection) as repeat_one:
        alert_ingest(payload=fixture_json("single-firing.json"))
    with django_assert_num_queries(len(repeat_one.captured_queries)):
        alert_ingest(payload=fixture_json("group-five-firing.json"))


def test_service_refuses_an_alert_listed_twice_in_one_delivery(fixture_json: Callable[[str], dict[str, Any]]) -> None:
    payload = fixture_json("single-firing.json")
    payload["alerts"].append(json.loads(json.dumps(payload["alerts"][0])))
    with pytest.raises(ValueError, match=r"alerts\[1\]: repeats alerts\[0\]"):
        alert_ingest(payload=payload)
    assert Alert.objects.count() == 0


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(statuses=st.lists(st.sampled_from(["firing", "resolved"]), min_size=1, max_size=6))
def test_any_order_of_deliveries_gives_one_incident_and_never_reopens(
    statuses: list[str], fixture_json: Callable[[str], dict[str, Any]]
) -> None:
    """Whatever order an HA pair delivers firing and resolved copies in, the incident is consistent."""
    Policy.objects.get_or_create(
        name="restart-flagged", matchers=['alertname="AutohealTestFlag"'], action="restart_container"
    )
    fingerprint = uuid.uuid4().hex[:16]
    for status in statuses:
        payload = fixture_json(f"single-{status}.json")
        payload["alerts"][0]["fingerprint"] = fingerprint
        alert_ingest(payload=payload)
    incident = Alert.objects.get(fingerprint=fingerprint)
    assert incident.deliveries == len(statuses)
    # Resolved once means resolved for good; a job exists only if the first word was "firing".
    assert incident.status == ("resolved" if "resolved" in statuses else "firing")
    assert Job.objects.filter(alert=incident).count() == (1 if statuses[0] == "firing" else 0)
    assert AuditEvent.objects.filter(fingerprint=fingerprint, kind="alert_resolved").count() == (
        1 if "resolved" in statuses else 0
    )
