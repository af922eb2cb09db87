"""Approve-mode policies: the job waits for a person; approve and deny through the API, expiry."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone
from rest_framework.test import APIClient

from remediation import safety
from remediation.models import Job
from remediation.policies import policies_export, policies_import, policies_load_yaml
from remediation.policy_schema import PolicyError, policy_validate
from remediation.tests.exec_helpers import drain, events, kinds, make_alert, make_job, make_policy

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def client_for(role: str) -> APIClient:
    user = User.objects.create_user(username=f"user-{role}", password="x-unused-password-1")
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    client = APIClient()
    client.force_login(user)
    return client


def waiting_job(tmp_path: Path, **policy_fields: Any) -> tuple[Job, Path]:
    marker = tmp_path / "ran"
    policy = make_policy(action="command", params={"argv": ["touch", str(marker)]}, mode="approve", **policy_fields)
    job = make_job(policy=policy, alert=make_alert())
    drain()
    job.refresh_from_db()
    return job, marker


def test_an_approve_mode_job_waits_and_the_request_links_to_the_job_on_ops(tmp_path: Path, settings: Any) -> None:
    settings.AUTOHEAL_PUBLIC_URL = "https://autoheal.example"
    job, marker = waiting_job(tmp_path)
    assert job.state == Job.State.AWAITING_APPROVAL
    assert not marker.exists()
    assert kinds(fingerprint=job.alert.fingerprint) == ["approval_requested"]
    requested = events("approval_requested")[0]
    assert requested.data["link"] == f"https://autoheal.example/ops/#job-{job.pk}"
    assert job.approval_expires_at is not None
    assert timedelta(seconds=890) < job.approval_expires_at - timezone.now() <= timedelta(seconds=900)


def test_an_admin_approves_with_a_reason_and_the_action_runs(tmp_path: Path) -> None:
    job, marker = waiting_job(tmp_path)
    answer = client_for("admin").post(f"/api/jobs/{job.pk}/approve", {"reason": "checked the graphs"}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"job": job.pk, "state": "queued", "skip_reason": ""}
    granted = events("approval_granted")[0]
    assert granted.actor == "user-admin" and granted.data["reason"] == "checked the graphs"
    drain()
    job.refresh_from_db()
    assert job.state == Job.State.OK and job.approved_by == "user-admin"
    assert marker.exists()
    assert kinds(fingerprint=job.alert.fingerprint)[-3:] == ["approval_granted", "action_started", "action_ok"]


def test_a_decision_without_a_reason_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    job, _ = waiting_job(tmp_path)
    admin = client_for("admin")
    for body in ({}, {"reason": "   "}, {"reason": "ok", "extra": 1}):
        answer = admin.post(f"/api/jobs/{job.pk}/approve", body, format="json")
        assert answer.status_code == 400, body
        assert answer.json()["error"]
    job.refresh_from_db()
    assert job.state == Job.State.AWAITING_APPROVAL
    assert not events("approval_granted")


def test_ops_cannot_approve(tmp_path: Path) -> None:
    job, _ = waiting_job(tmp_path)
    assert client_for("ops").post(f"/api/jobs/{job.pk}/approve", {"reason": "x"}, format="json").status_code == 403
    job.refresh_from_db()
    assert job.state == Job.State.AWAITING_APPROVAL


def test_a_denied_job_is_skipped_with_the_actor_in_the_audit(tmp_path: Path) -> None:
    job, marker = waiting_job(tmp_path)
    answer = client_for("admin").post(f"/api/jobs/{job.pk}/deny", {"reason": "maintenance tonight"}, format="json")
    assert answer.status_code == 200
    assert answer.json()["state"] == "skipped" and answer.json()["skip_reason"] == "approval_denied"
    drain()
    job.refresh_from_db()
    assert job.state == Job.State.SKIPPED and job.skip_reason == "approval_denied"
    assert not marker.exists()
    denied = events("approval_denied")[0]
    assert denied.actor == "user-admin" and denied.data["reason"] == "maintenance tonight"
    assert events("action_skipped")[0].data["reason"] == "approval_denied"


def test_deciding_a_job_that_is_not_waiting_is_a_conflict_and_an_unknown_job_is_404(tmp_path: Path) -> None:
    job, _ = waiting_job(tmp_path)
    admin = client_for("admin")
    assert admin.post(f"/api/jobs/{job.pk}/deny", {"reason": "no"}, format="json").status_code == 200
    assert admin.post(f"/api/jobs/{job.pk}/approve", {"reason": "yes"}, format="json").status_code == 409
    assert admin.post("/api/jobs/999999/approve", {"reason": "yes"}, format="json").status_code == 404


def test_every_guard_is_checked_again_at_approval(tmp_path: Path) -> None:
    job, marker = waiting_job(tmp_path)
    safety.switch_set(enabled=False, actor="alice", reason="incident review")
    answer = client_for("admin").post(f"/api/jobs/{job.pk}/approve", {"reason": "go"}, format="json")
    assert answer.status_code == 200
    assert answer.json()["state"] == "skipped" and answer.json()["skip_reason"] == "disabled"
    drain()
    assert not marker.exists()
    assert events("approval_granted") and events("action_skipped")[0].data["reason"] == "disabled"


def test_a_job_nobody_decided_on_in_time_expires(tmp_path: Path) -> None:
    job, marker = waiting_job(tmp_path, approval_timeout_seconds=60)
    Job.objects.filter(pk=job.pk).update(approval_expires_at=timezone.now() - timedelta(seconds=1))
    drain()
    job.refresh_from_db()
    assert job.state == Job.State.SKIPPED and job.skip_reason == "approval_expired"
    assert events("action_skipped")[0].data["reason"] == "approval_expired"
    assert not marker.exists()


def test_the_new_policy_fields_round_trip_through_yaml_and_bad_values_are_named(settings: Any) -> None:
    settings.AUTOHEAL_NOTIFY_URLS = "oncall=json://127.0.0.1:9/oncall,chat=json://127.0.0.1:9/chat"
    text = """
policies:
  - name: careful-restart
    matchers: ['alertname="ContainerUnhealthy"']
    action: restart_container
    mode: approve
    approval_timeout_seconds: 600
    silence_during_action: true
    when_silence_unknown: skip
    notify: [oncall, chat]
    capture_evidence: false
"""
    policies_import(documents=policies_load_yaml(text), actor="test")
    exported = policies_export()
    for line in (
        "mode: approve",
        "approval_timeout_seconds: 600",
        "silence_during_action: true",
        "when_silence_unknown: skip",
        "capture_evidence: false",
    ):
        assert line in exported
    assert "- oncall" in exported and "- chat" in exported
    base = {"name": "p", "matchers": ['alertname="A"'], "action": "log_only"}
    with pytest.raises(PolicyError) as raised:
        policy_validate(
            {
                **base,
                "mode": "sometimes",
                "when_silence_unknown": "maybe",
                "notify": ["json://secret@host/"],
                "approval_timeout_seconds": 0,
            }
        )
    assert set(raised.value.errors) == {"mode", "when_silence_unknown", "notify", "approval_timeout_seconds"}
    defaults = policy_validate(base)
    assert defaults["mode"] == "auto" and defaults["approval_timeout_seconds"] == 900
    assert defaults["silence_during_action"] is False and defaults["when_silence_unknown"] == "act"
    assert defaults["notify"] == [] and defaults["capture_evidence"] is True


def test_a_policy_naming_a_target_the_operator_did_not_configure_is_refused(settings: Any) -> None:
    settings.AUTOHEAL_NOTIFY_URLS = "oncall=json://127.0.0.1:9/oncall"
    with pytest.raises(PolicyError) as raised:
        policy_validate({"name": "p", "matchers": ['alertname="A"'], "action": "log_only", "notify": ["oncal"]})
    message = raised.value.errors["notify"]
    assert "'oncal'" in message and "configured: oncall" in message and "json://" not in message
