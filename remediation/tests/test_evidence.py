"""Evidence kept before a destructive Docker action, against the private dockerd."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from audit.models import AuditEvent
from remediation.models import Job
from remediation.tests.exec_helpers import drain, kinds, make_alert, make_job, make_policy

pytestmark = [pytest.mark.postgres, pytest.mark.docker, pytest.mark.django_db(transaction=True)]

# 300 lines of about 410 bytes: the last 200 are about 82 KB, over the 64 KB bound. Then a line
# with a credential, which the redaction must mask.
NOISY = (
    'i=0; while [ $i -lt 300 ]; do printf "line %d %0400d\\n" $i 0; i=$((i+1)); done; '
    "echo 'login with password=hunter2-secret'; exec sleep 100000"
)


def sick_container(make_container: Any) -> Any:
    container = make_container(
        labels={"autoheal.enable": "true"},
        healthy=None,
        command=["sh", "-c", NOISY],
        healthcheck={
            "test": ["CMD-SHELL", "echo probe failed, token=abcdefghijklmnop; exit 1"],
            "interval": 500_000_000,
            "timeout": 1_000_000_000,
            "retries": 1,
            "start_period": 0,
        },
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        container.reload()
        health = container.attrs["State"].get("Health") or {}
        if health.get("Status") == "unhealthy" and health.get("Log"):
            return container
        time.sleep(0.2)
    pytest.fail("the container did not become unhealthy")


def test_logs_state_and_failed_probes_are_kept_before_the_action_bounded_and_redacted(
    docker_settings: Any, make_container: Any
) -> None:
    container = sick_container(make_container)
    name = container.name
    policy = make_policy(action="kill_container")
    job = make_job(policy=policy, alert=make_alert(), target=name)
    drain()
    job.refresh_from_db()
    assert job.state == Job.State.OK
    trail = kinds(fingerprint=job.alert.fingerprint)
    assert trail.index("evidence_captured") < trail.index("action_ok")
    event = AuditEvent.objects.get(kind="evidence_captured")
    evidence = event.data["evidence"]
    assert event.data["job"] == job.pk and event.policy == policy.name and event.target == name
    assert evidence["container"] == name
    # Taken before the kill: the container was still running.
    assert evidence["state"]["Running"] is True
    assert evidence["health"]["status"] == "unhealthy"
    assert evidence["health"]["probes"] and all(p["exit_code"] == 1 for p in evidence["health"]["probes"])
    assert "probe failed" in evidence["health"]["probes"][-1]["output"]
    logs = evidence["logs"]
    assert len(logs.encode()) <= 64 * 1024 and evidence["logs_truncated"] is True
    assert "line 299 " in logs and "line 99 " not in logs
    text = json.dumps(event.data)
    assert "hunter2-secret" not in text and "abcdefghijklmnop" not in text
    assert "password=[redacted]" in logs


def test_a_policy_can_turn_evidence_off(docker_settings: Any, make_container: Any) -> None:
    container = make_container(labels={"autoheal.enable": "true"})
    job = make_job(
        policy=make_policy(action="kill_container", capture_evidence=False), alert=make_alert(), target=container.name
    )
    drain()
    job.refresh_from_db()
    assert job.state == Job.State.OK
    assert not AuditEvent.objects.filter(kind="evidence_captured").exists()


def test_an_approve_mode_job_keeps_evidence_for_the_approver_and_again_before_the_action(
    docker_settings: Any, make_container: Any
) -> None:
    container = sick_container(make_container)
    job = make_job(
        policy=make_policy(action="kill_container", mode="approve"), alert=make_alert(), target=container.name
    )
    drain()
    job.refresh_from_db()
    assert job.state == Job.State.AWAITING_APPROVAL
    before = AuditEvent.objects.get(kind="evidence_captured")
    assert before.data["stage"] == "before_approval"
    assert before.data["evidence"]["health"]["status"] == "unhealthy"
    from remediation.approvals import job_approve

    job_approve(job_id=job.pk, actor="ada", reason="seen the logs")
    drain()
    stages = list(
        AuditEvent.objects.filter(kind="evidence_captured").order_by("id").values_list("data__stage", flat=True)
    )
    assert stages == ["before_approval", "before_action"]


def test_no_evidence_is_read_from_a_container_that_did_not_opt_in(docker_settings: Any, make_container: Any) -> None:
    container = make_container(labels={})
    job = make_job(
        policy=make_policy(action="kill_container", mode="approve"), alert=make_alert(), target=container.name
    )
    drain()
    assert Job.objects.get(pk=job.pk).state == Job.State.AWAITING_APPROVAL
    assert not AuditEvent.objects.filter(kind="evidence_captured").exists()
