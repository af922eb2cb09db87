"""``/ops/``: who sees what, what each control changes and audits, and what the page costs."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_record
from dashboard.selectors import success_metrics_from
from remediation.models import Alert, Job, Policy, Switch
from remediation.tests.exec_helpers import make_alert, make_job, make_policy

pytestmark = pytest.mark.django_db


def login(client: Client, role: str | None, username: str = "") -> User:
    user = User.objects.create_user(username=username or f"user-{role}-{uuid.uuid4().hex[:6]}", password=None)
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    client.force_login(user)
    return user


def finished_job(policy: Policy, state: str = "ok", *, seconds_after_start: int = 45, **fields: Any) -> Job:
    now = timezone.now()
    alert = make_alert(starts_at=now - timedelta(seconds=seconds_after_start))
    values: dict[str, Any] = {"state": state, "started_at": now - timedelta(seconds=5), "finished_at": now}
    values.update(fields)
    return make_job(policy=policy, alert=alert, **values)


def test_anonymous_is_sent_to_the_login_page(client: Client) -> None:
    answer = client.get("/ops/")

    assert answer.status_code == 302
    assert answer["Location"].startswith("/accounts/login/?next=/ops/")


def test_a_user_without_a_role_is_refused(client: Client) -> None:
    login(client, None)

    assert client.get("/ops/").status_code == 403


def test_ops_sees_the_state_but_no_switch_controls(client: Client) -> None:
    login(client, "ops")

    html = client.get("/ops/").content.decode()

    assert 'id="state-enabled"' in html
    assert 'id="switch-controls"' not in html
    assert "Changing the switch needs the admin role." in html


def test_admin_sees_the_switch_controls(client: Client) -> None:
    login(client, "admin")

    html = client.get("/ops/").content.decode()

    assert 'id="switch-controls"' in html
    assert 'name="change" value="pause"' in html


def test_ops_cannot_change_the_switch(client: Client) -> None:
    login(client, "ops")

    answer = client.post("/ops/switch", {"change": "disable", "reason": "try"})

    assert answer.status_code == 403
    assert not Switch.objects.exists()
    assert not AuditEvent.objects.filter(kind="switch_changed").exists()


def test_admin_pauses_for_30_minutes_with_a_reason_and_it_is_audited_with_the_actor(client: Client) -> None:
    login(client, "admin", username="alice")

    answer = client.post("/ops/switch", {"change": "pause", "minutes": "30", "reason": "database failover"})

    assert answer.status_code == 302
    row = Switch.objects.get(pk=1)
    assert row.paused_until is not None
    assert timedelta(minutes=29) < row.paused_until - timezone.now() <= timedelta(minutes=30)
    event = AuditEvent.objects.get(kind="switch_changed")
    assert (event.actor, event.message, event.data["reason"]) == ("alice", "database failover", "database failover")
    html = client.get("/ops/").content.decode()
    assert "Pause: done." in html
    assert re.search(r'id="state-enabled">\s*<dt>Remediation</dt><dd>paused</dd>', html)
    assert "min left)" in html


def test_a_switch_change_without_a_reason_is_refused_and_changes_nothing(client: Client) -> None:
    login(client, "admin")

    answer = client.post("/ops/switch", {"change": "disable", "reason": "  "})

    assert answer.status_code == 400
    assert "Give a reason for the change." in answer.content.decode()
    assert not Switch.objects.exists()


@pytest.mark.parametrize(
    ("post", "problem"),
    [
        ({"change": "explode", "reason": "r"}, "change: Select a valid choice."),
        ({"change": "pause", "reason": "r"}, "Say for how many minutes to pause."),
        ({"change": "pause", "minutes": "0", "reason": "r"}, "minutes: Ensure this value is greater than"),
    ],
)
def test_bad_switch_input_is_a_400_naming_the_problem(client: Client, post: dict[str, str], problem: str) -> None:
    login(client, "admin")

    answer = client.post("/ops/switch", post)

    assert answer.status_code == 400
    assert problem in answer.content.decode()
    assert not AuditEvent.objects.filter(kind="switch_changed").exists()


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [("disable", "enabled", False), ("dry_run_on", "dry_run", True)],
)
def test_each_switch_control_changes_the_runtime_switch(client: Client, change: str, field: str, value: bool) -> None:
    login(client, "admin")

    assert client.post("/ops/switch", {"change": change, "reason": "maintenance"}).status_code == 302

    assert getattr(Switch.objects.get(pk=1), field) is value


def test_admin_closes_an_open_circuit(client: Client) -> None:
    Switch.objects.create(pk=1, circuit_open=True, circuit_opened_at=timezone.now())
    login(client, "admin", username="bob")
    assert "Close the circuit" in client.get("/ops/").content.decode()

    client.post("/ops/switch", {"change": "close_circuit", "reason": "upstream fixed"})

    assert Switch.objects.get(pk=1).circuit_open is False
    assert AuditEvent.objects.get(kind="circuit_closed").actor == "bob"


def test_ops_acks_an_open_incident_from_the_page(client: Client) -> None:
    alert = make_alert()
    login(client, "ops", username="carol")
    assert f'name="fingerprint" value="{alert.fingerprint}"' in client.get("/ops/").content.decode()

    answer = client.post("/ops/ack", {"fingerprint": alert.fingerprint, "note": "I am on it"})

    assert answer.status_code == 302
    alert.refresh_from_db()
    assert (alert.acked_by, alert.ack_note) == ("carol", "I am on it")
    assert AuditEvent.objects.get(kind="ack").actor == "carol"
    assert "acked by carol" in client.get("/ops/").content.decode()


def test_acking_an_unknown_incident_is_a_404_that_says_so(client: Client) -> None:
    login(client, "ops")

    answer = client.post("/ops/ack", {"fingerprint": "feedfeedfeedfeed"})

    assert answer.status_code == 404
    assert "no firing incident has the fingerprint feedfeedfeedfeed" in answer.content.decode()


def test_marking_an_action_a_false_positive_is_audited_and_counts_in_the_rate(client: Client) -> None:
    policy = make_policy()
    job = finished_job(policy)
    finished_job(policy)
    login(client, "ops", username="dave")

    answer = client.post(f"/ops/actions/{job.pk}/false-positive", {"value": "true"})

    assert answer.status_code == 302
    job.refresh_from_db()
    assert job.false_positive is True
    event = AuditEvent.objects.get(kind="false_positive_marked")
    assert (event.actor, event.data["false_positive"], event.data["job"]) == ("dave", True, job.pk)
    html = client.get("/ops/").content.decode()
    assert re.search(
        r'id="metric-false_positive_rate">\s*<div class="metric-label">False-positive rate</div>\s*'
        r'<div class="metric-value">50.0%</div>',
        html,
    )


def test_marking_the_same_verdict_twice_writes_one_event(client: Client) -> None:
    job = finished_job(make_policy())
    login(client, "ops")

    client.post(f"/ops/actions/{job.pk}/false-positive", {"value": "false"})
    client.post(f"/ops/actions/{job.pk}/false-positive", {"value": "false"})

    assert AuditEvent.objects.filter(kind="false_positive_marked").count() == 1
    job.refresh_from_db()
    assert job.false_positive is False


@pytest.mark.parametrize("fields", [{"dry_run": True}, {"state": "skipped"}])
def test_an_action_that_did_not_run_cannot_be_judged(client: Client, fields: dict[str, Any]) -> None:
    job = finished_job(make_policy(), **fields)
    login(client, "ops")

    answer = client.post(f"/ops/actions/{job.pk}/false-positive", {"value": "true"})

    assert answer.status_code == 400
    assert "nothing to judge" in answer.content.decode()
    job.refresh_from_db()
    assert job.false_positive is None
    assert not AuditEvent.objects.filter(kind="false_positive_marked").exists()


def test_a_bad_verdict_value_is_refused(client: Client) -> None:
    job = finished_job(make_policy())
    login(client, "ops")

    answer = client.post(f"/ops/actions/{job.pk}/false-positive", {"value": "maybe"})

    assert answer.status_code == 400
    job.refresh_from_db()
    assert job.false_positive is None


def test_success_metrics_are_shown_against_their_targets(client: Client) -> None:
    policy = make_policy()
    for _ in range(3):
        finished_job(policy, seconds_after_start=60)
    finished_job(policy, "fail")
    login(client, "ops")

    html = client.get("/ops/").content.decode()

    assert re.search(r'class="metric bad" id="metric-success_rate">.*?75.0%.*?target &gt; 95% · missed', html, re.S)
    assert re.search(r'class="metric good" id="metric-mttr">.*?1.0 min.*?target &lt; 2.0 min · met', html, re.S)


def test_success_metrics_without_actions_say_there_is_no_data() -> None:
    metrics = success_metrics_from({"total": 0, "ok": 0, "false_positive": 0, "marked": 0, "ttr": None})

    assert [m.met for m in metrics] == [None, None, None]
    assert metrics[0].shown == "no actions yet"


def test_targets_in_cooldown_show_the_time_left(client: Client) -> None:
    policy = make_policy(action="restart_container", cooldown_seconds=600)
    finished_job(policy, target="web-7")
    login(client, "ops")

    html = client.get("/ops/").content.decode()

    match = re.search(r'<td>web-7</td>.*?data-until="[^"]+">(\d+) s</td>', html, re.S)
    assert match is not None
    assert 590 <= int(match.group(1)) <= 600


def test_charts_get_their_data_as_json_not_as_script(client: Client) -> None:
    finished_job(make_policy())
    login(client, "ops")

    html = client.get("/ops/").content.decode()

    assert '<script id="chart-data" type="application/json">' in html
    assert re.search(r'"ok": \[0, [0, ]*1\]', html)
    # No inline code: every other script is a static file.
    assert re.findall(r"<script(?![^>]*(?:src=|application/json))", html) == []


def test_grafana_link_and_embed_only_where_configured(client: Client, settings: Any) -> None:
    login(client, "ops")
    plain = client.get("/ops/")
    assert "Grafana dashboard" not in plain.content.decode()
    assert "frame-src" not in plain["Content-Security-Policy"]

    settings.AUTOHEAL_GRAFANA_URL = "https://grafana.example.test:3000/"
    link_only = client.get("/ops/")
    assert 'href="https://grafana.example.test:3000/d/autoheal"' in link_only.content.decode()
    assert "<iframe" not in link_only.content.decode()

    settings.AUTOHEAL_GRAFANA_EMBED = True
    embedded = client.get("/ops/")
    assert (
        '<iframe class="grafana" src="https://grafana.example.test:3000/d/autoheal?kiosk"' in embedded.content.decode()
    )
    assert "frame-src https://grafana.example.test:3000" in embedded["Content-Security-Policy"]
    assert "frame-src" not in client.get("/console")["Content-Security-Policy"]


def _populate(size: int) -> None:
    policy = make_policy(action="restart_container", cooldown_seconds=600)
    now = timezone.now()
    for i in range(size):
        alert = make_alert(labels={"alertname": "ContainerUnhealthy", "container": f"c{i}"})
        make_job(policy=policy, alert=alert, state="ok", started_at=now, finished_at=now, target=f"c{i}")
        make_job(policy=policy, alert=alert, state="queued", attempt=2, target=f"c{i}")
        make_job(policy=policy, alert=alert, state="awaiting_approval", attempt=3, target=f"c{i}")
        audit_record(kind="action_ok", alertname="ContainerUnhealthy", target=f"c{i}")
        audit_record(
            kind="evidence_captured", fingerprint=alert.fingerprint, data={"job": i, "evidence": {"logs": "x"}}
        )
    Alert.objects.filter(pk__in=list(Alert.objects.values_list("pk", flat=True)[: size // 2])).update(
        acked_at=now, acked_by="x"
    )


@pytest.mark.parametrize("size", [2, 40])
def test_the_page_costs_the_same_queries_whatever_the_data_size(
    client: Client, django_assert_num_queries: Any, size: int
) -> None:
    login(client, "admin")
    _populate(size)
    client.get("/ops/")  # the session and roles are warm, as on any later visit

    # session, user, groups, switch, backlog id, backlog rows, incidents, their jobs, longest
    # cooldown, cooldown jobs, recent actions, the 30-day series (charts and metrics), jobs
    # awaiting approval, evidence of the open incidents, the fleet's Agents panel
    with django_assert_num_queries(15):
        answer = client.get("/ops/")

    assert answer.status_code == 200
    assert answer.content.decode().count('<tr data-job="') == min(size, 25)
