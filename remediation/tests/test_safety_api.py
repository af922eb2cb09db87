"""``/api/switch`` and ``/ack``: who may do what, validation naming the field, and the audit trail."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone
from rest_framework.test import APIClient

from remediation.models import Alert, Job, Switch
from remediation.tests.exec_helpers import drain, events, make_alert, make_job, make_policy

pytestmark = pytest.mark.django_db


def client_for(role: str | None) -> APIClient:
    user = User.objects.create_user(username=f"user-{role}", password="x-unused-password-1")
    if role:
        user.groups.add(Group.objects.get(name=role))
    client = APIClient()
    client.force_login(user)
    return client


def test_ops_can_read_the_switch_but_not_change_it():
    ops = client_for("ops")
    answer = ops.get("/api/switch")
    assert answer.status_code == 200
    assert answer.json()["enabled"] is True and answer.json()["circuit"] == "closed"
    assert ops.post("/api/switch", {"enabled": False}, format="json").status_code == 403
    assert not events("switch_changed")


def test_anonymous_callers_get_nothing():
    assert APIClient().get("/api/switch").status_code in (401, 403)
    assert APIClient().post("/ack", {"fingerprint": "x"}, format="json").status_code in (401, 403)


def test_admin_pause_for_thirty_minutes_is_audited_with_the_actor_and_resumes_by_itself():
    admin = client_for("admin")
    answer = admin.post("/api/switch", {"enabled": False, "pause_minutes": 30, "reason": "deploy"}, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["enabled"] is False and body["pause_minutes"] == 30
    row = Switch.objects.get(pk=1)
    assert row.enabled is True  # the pause is temporary: the switch itself stays on
    assert timedelta(minutes=29) < row.paused_until - timezone.now() <= timedelta(minutes=30)
    change = events("switch_changed")[0]
    assert change.actor == "user-admin" and change.message == "deploy"
    assert change.data["before"]["paused_until"] is None and change.data["after"]["paused_until"]


def test_switching_off_and_on_again():
    admin = client_for("admin")
    assert admin.post("/api/switch", {"enabled": False}, format="json").json()["enabled"] is False
    assert admin.post("/api/switch", {"enabled": True}, format="json").json()["enabled"] is True
    assert [e.data["after"]["enabled"] for e in events("switch_changed")] == [False, True]


def test_a_request_that_changes_nothing_writes_no_audit_event():
    admin = client_for("admin")
    assert admin.post("/api/switch", {"enabled": True}, format="json").status_code == 200
    assert not events("switch_changed")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"enabled": "no"}, "enabled"),
        ({"dry_run": 1}, "dry_run"),
        ({"pause_minutes": 0}, "pause_minutes"),
        ({"pause_minutes": "30"}, "pause_minutes"),
        ({"pause_minutes": 999999}, "pause_minutes"),
        ({"enabled": True, "pause_minutes": 5}, "pause_minutes"),
        ({"enabeld": False}, "enabeld"),
        ({}, ""),
    ],
)
def test_bad_switch_input_is_a_400_naming_the_field_and_changes_nothing(body, field):
    admin = client_for("admin")
    answer = admin.post("/api/switch", body, format="json")
    assert answer.status_code == 400
    assert answer.json()["field"] == field
    if field:
        assert field in answer.json()["error"]
    assert not events("switch_changed")
    assert not Switch.objects.filter(enabled=False).exists()


def test_dry_run_cannot_go_below_the_environment_floor(settings):
    settings.AUTOHEAL_DRY_RUN = True
    admin = client_for("admin")
    body = admin.post("/api/switch", {"dry_run": False}, format="json").json()
    assert body["dry_run"] is True
    assert body["floors"]["AUTOHEAL_DRY_RUN"] is True
    assert "floor" in body["notes"][0]


def test_admin_can_close_the_circuit_through_the_switch():
    Switch.objects.update_or_create(pk=1, defaults={"circuit_open": True, "circuit_opened_at": timezone.now()})
    admin = client_for("admin")
    body = admin.post("/api/switch", {"close_circuit": True, "reason": "hosts checked"}, format="json").json()
    assert body["circuit"] == "closed"
    closed = events("circuit_closed")[0]
    assert closed.actor == "user-admin" and closed.message == "hosts checked"


def test_ack_by_ops_stops_further_actions_for_the_incident():
    policy = make_policy(action="log_only")
    alert = make_alert()
    job = make_job(policy=policy, alert=alert)
    ops = client_for("ops")
    answer = ops.post("/ack", {"fingerprint": alert.fingerprint, "note": "I am on it"}, format="json")
    assert answer.status_code == 200 and answer.json()["acked_by"] == "user-ops"
    ack = events("ack")[0]
    assert (ack.actor, ack.fingerprint, ack.data["note"]) == ("user-ops", alert.fingerprint, "I am on it")
    drain()
    job.refresh_from_db()
    assert (job.state, job.skip_reason) == (Job.State.SKIPPED, "acked")


def test_ack_of_an_unknown_or_resolved_incident_is_a_404_and_bad_input_a_400():
    ops = client_for("ops")
    resolved = make_alert(status=Alert.Status.RESOLVED)
    assert ops.post("/ack", {"fingerprint": resolved.fingerprint}, format="json").status_code == 404
    assert ops.post("/ack", {"fingerprint": "nope"}, format="json").status_code == 404
    missing = ops.post("/ack", {"note": "x"}, format="json")
    assert missing.status_code == 400 and missing.json()["field"] == "fingerprint"
    assert not events("ack")


def test_users_without_a_role_cannot_ack():
    alert = make_alert()
    assert client_for(None).post("/ack", {"fingerprint": alert.fingerprint}, format="json").status_code == 403


def test_the_schema_documents_switch_and_ack():
    admin = client_for("admin")
    schema = admin.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    text = schema.content.decode()
    assert "/api/switch" in text and "/ack" in text and "pause_minutes" in text
