"""The fleet's central side in one process: placement, tokens, hand-over, reports, expiry, views.

The agents' side on real engines is in test_fleet_e2e.py; here the services are called directly,
as the agent API calls them, to pin down the rules an operator relies on.
"""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from fleet import handover
from fleet.models import Agent, AgentReport, AgentToken
from fleet.placement import place
from fleet.tokens import agent_token_create, token_hash
from remediation.execution.leases import job_claim, leases_expire
from remediation.intake import alert_ingest
from remediation.models import Job
from remediation.policy_schema import PolicyError, policy_validate
from remediation.tests.exec_helpers import make_alert, make_job, make_policy

pytestmark = pytest.mark.django_db

INVENTORIES = {"a": ["web", "db"], "b": ["web", "api"]}


# --- placement (pure) ---------------------------------------------------------------------------


def test_a_policy_host_wins_over_the_inventory() -> None:
    assert place(action="restart_container", target="web", host="b", inventories=INVENTORIES).host == "b"


def test_a_name_on_one_host_is_placed_there_and_on_two_hosts_is_ambiguous() -> None:
    assert place(action="restart_container", target="api", host="", inventories=INVENTORIES).host == "b"
    shared = place(action="restart_container", target="web", host="", inventories=INVENTORIES)
    assert (shared.host, shared.skip_reason, shared.candidates) == ("", "ambiguous_target", ("a", "b"))


def test_unknown_names_webhooks_and_unplaced_commands_stay_central() -> None:
    assert place(action="restart_container", target="cache", host="", inventories=INVENTORIES).host == ""
    assert place(action="webhook", target="web", host="a", inventories=INVENTORIES).host == ""
    assert place(action="command", target="web", host="", inventories=INVENTORIES).host == ""
    assert place(action="command", target="x", host="a", inventories=INVENTORIES).host == "a"


def test_a_policy_host_must_be_a_label_template() -> None:
    with pytest.raises(PolicyError) as caught:
        policy_validate({"name": "p", "matchers": ['a="b"'], "action": "restart_container", "host": "{{ host }}"})
    assert "host" in caught.value.errors


# --- intake -------------------------------------------------------------------------------------


def _delivery(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "autoheal",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "startsAt": timezone.now().isoformat(),
                "fingerprint": labels["container"],
            }
        ],
    }


def test_intake_places_by_inventory_and_skips_an_ambiguous_name_with_no_job() -> None:
    for host, names in INVENTORIES.items():
        Agent.objects.create(host=host, inventory=[{"name": n} for n in names])
    make_policy(name="heal", action="restart_container")
    alert_ingest(payload=_delivery({"alertname": "ContainerUnhealthy", "container": "api"}))
    assert list(Job.objects.values_list("target", "host")) == [("api", "b")]
    queued = AuditEvent.objects.get(kind="action_queued")
    assert queued.data["host"] == "b"

    alert_ingest(payload=_delivery({"alertname": "ContainerUnhealthy", "container": "web"}))
    assert Job.objects.count() == 1
    skipped = AuditEvent.objects.get(kind="action_skipped")
    assert (skipped.data["reason"], skipped.data["hosts"]) == ("ambiguous_target", ["a", "b"])


def test_with_no_agents_the_central_worker_claims_as_before_and_leaves_agent_hosts_alone(settings: Any) -> None:
    policy = make_policy(action="log_only")
    local = make_job(policy=policy, alert=make_alert())
    placed = make_job(policy=policy, alert=make_alert(), host="a")
    assert job_claim(worker="central").pk == local.pk
    assert job_claim(worker="central") is None
    settings.AUTOHEAL_LOCAL_HOST = "a"  # mixed mode: host a is the central's own engine
    assert job_claim(worker="central").pk == placed.pk


# --- tokens -------------------------------------------------------------------------------------


def test_a_token_is_printed_once_stored_hashed_listed_and_revoked_with_audit() -> None:
    out, err = StringIO(), StringIO()
    call_command("autoheal_agent_token", "create", "--host", "a", stdout=out, stderr=err)
    token = out.getvalue().strip()
    row = AgentToken.objects.get()
    assert row.token_hash == token_hash(token) and token not in json.dumps(
        list(AgentToken.objects.values()), default=str
    )
    listing = StringIO()
    call_command("autoheal_agent_token", "list", stdout=listing)
    assert "a" in listing.getvalue() and token not in listing.getvalue()
    call_command("autoheal_agent_token", "revoke", str(row.pk), stdout=StringIO())
    events = AuditEvent.objects.filter(kind="agent_token_changed").order_by("id")
    assert [e.data["operation"] for e in events] == ["created", "revoked"]
    assert all(token not in json.dumps(e.data) + e.message for e in events)
    assert AgentToken.objects.get().revoked_at is not None


def test_a_bad_host_name_is_refused_and_creates_nothing() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="host name"):
        call_command("autoheal_agent_token", "create", "--host", "../etc", stdout=StringIO())
    assert not AgentToken.objects.exists() and not AuditEvent.objects.exists()


# --- hand-over, start and reports ----------------------------------------------------------------


def _placed_job(host: str = "a", **fields: Any) -> Job:
    policy = make_policy(action="log_only", **fields)
    return make_job(policy=policy, alert=make_alert(), host=host)


def test_a_resent_report_is_recorded_once_and_applied_once() -> None:
    job = _placed_job()
    handed = handover.agent_job_next(host="a", wait_seconds=0)
    assert handed is not None and handed.job == job.pk
    assert handover.agent_job_start(host="a", job_id=job.pk, claim=handed.claim)["go"] is True
    report = {"host": "a", "job_id": job.pk, "attempt": 1, "claim": handed.claim, "ok": True, "transient": False}
    first = handover.agent_job_report(**report, detail="done", output={}, duration_seconds=0.1)
    again = handover.agent_job_report(**report, detail="done", output={}, duration_seconds=0.1)
    assert (first.disposition, first.duplicate, again.duplicate) == ("applied", False, True)
    assert Job.objects.get(pk=job.pk).state == "ok"
    assert AuditEvent.objects.filter(kind="action_ok", data__job=job.pk).count() == 1
    assert AgentReport.objects.count() == 1


def test_a_report_after_the_lease_expired_is_recorded_late_and_never_applied_twice() -> None:
    job = _placed_job()
    handed = handover.agent_job_next(host="a", wait_seconds=0)
    assert handed is not None
    handover.agent_job_start(host="a", job_id=job.pk, claim=handed.claim)
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert leases_expire() == 1
    assert Job.objects.get(pk=job.pk).state == "unknown"
    report = {"host": "a", "job_id": job.pk, "attempt": 1, "claim": handed.claim, "ok": True, "transient": False}
    late = handover.agent_job_report(**report, detail="it did restart", output={}, duration_seconds=70.0)
    again = handover.agent_job_report(**report, detail="it did restart", output={}, duration_seconds=70.0)
    assert (late.disposition, again.duplicate) == ("late", True)
    ok = AuditEvent.objects.filter(kind="action_ok", data__job=job.pk)
    assert ok.count() == 1 and ok[0].data["after_unknown"] is True and ok[0].data["host"] == "a"
    assert Job.objects.filter(policy_name=job.policy_name).count() == 1  # nothing re-run


def test_a_hand_over_asked_started_decides_under_the_lock_and_writes_action_started_once() -> None:
    job = _placed_job()
    handed = handover.agent_job_next(host="a", wait_seconds=0, start=True)
    assert handed is not None and handed.job == job.pk
    answer = handed.as_dict()
    assert answer["go"] is True and answer["probe"] is False and answer["capture_evidence"] is False
    current = Job.objects.get(pk=job.pk)
    assert current.started_at is not None and current.state == "running"
    # The agent's start request (an older agent's second step) changes nothing more.
    assert handover.agent_job_start(host="a", job_id=job.pk, claim=handed.claim)["go"] is True
    assert AuditEvent.objects.filter(kind="action_started", data__job=job.pk).count() == 1


def test_a_hand_over_asked_started_with_the_switch_off_is_skipped_and_never_handed_over() -> None:
    from remediation import safety

    job = _placed_job()
    safety.switch_set(enabled=False, actor="test", reason="maintenance")
    assert handover.agent_job_next(host="a", wait_seconds=0, start=True) is None
    assert (Job.objects.get(pk=job.pk).state, Job.objects.get(pk=job.pk).skip_reason) == ("skipped", "disabled")
    assert not AuditEvent.objects.filter(kind="action_started").exists()


@pytest.mark.parametrize("start", [True, False])
def test_an_approve_mode_job_on_an_agent_host_waits_for_a_person_and_runs_once_approved(start: bool) -> None:
    from remediation.approvals import job_approve

    policy = make_policy(action="restart_container", mode="approve", target="{{ labels.container }}")
    job = make_job(policy=policy, alert=make_alert(), host="a", action="restart_container", target="web")
    # The hand-over passes the same gate as the worker: parked, never handed to the agent.
    assert handover.agent_job_next(host="a", wait_seconds=0, start=start) is None
    assert Job.objects.get(pk=job.pk).state == "awaiting_approval"
    assert AuditEvent.objects.filter(kind="approval_requested", data__job=job.pk).count() == 1
    # The central's engine is not host a's: no evidence is read here before approval.
    assert not AuditEvent.objects.filter(kind="evidence_captured").exists()
    assert not AuditEvent.objects.filter(kind="action_started").exists()

    job_approve(job_id=job.pk, actor="olga", reason="checked the dashboards")
    handed = handover.agent_job_next(host="a", wait_seconds=0, start=start)
    assert handed is not None and handed.job == job.pk
    if not start:
        assert handover.agent_job_start(host="a", job_id=job.pk, claim=handed.claim)["go"] is True
    assert AuditEvent.objects.filter(kind="action_started", data__job=job.pk).count() == 1


def test_a_refusal_after_a_started_hand_over_is_a_skip_marked_after_start() -> None:
    job = _placed_job()
    handed = handover.agent_job_next(host="a", wait_seconds=0, start=True)
    assert handed is not None
    state = handover.agent_job_refuse(
        host="a", job_id=job.pk, claim=handed.claim, detail="no container web", reason="target_missing"
    )
    assert state == "skipped"
    event = AuditEvent.objects.get(kind="action_skipped", data__job=job.pk)
    assert (event.data["reason"], event.data["after_start"]) == ("target_missing", True)


def test_agent_evidence_is_recorded_once_redacted_and_bounded() -> None:
    job = _placed_job()
    handed = handover.agent_job_next(host="a", wait_seconds=0, start=True)
    assert handed is not None
    evidence = {"container": "web", "logs": "password=hunter2-secret\n", "state": {"Running": True}, "x": "dropped"}
    assert handover.agent_job_evidence(host="a", job_id=job.pk, claim=handed.claim, evidence=evidence) is True
    assert handover.agent_job_evidence(host="a", job_id=job.pk, claim=handed.claim, evidence=evidence) is False
    event = AuditEvent.objects.get(kind="evidence_captured", data__job=job.pk)
    assert (event.data["stage"], event.data["host"]) == ("before_action", "a")
    assert event.data["evidence"] == {"container": "web", "logs": "password=[redacted]\n", "state": {"Running": True}}
    # The same evidence in the report (its own request's answer was lost) is not recorded again.
    report = {"host": "a", "job_id": job.pk, "attempt": 1, "claim": handed.claim, "ok": True, "transient": False}
    handover.agent_job_report(**report, detail="done", output={}, duration_seconds=0.1, evidence=evidence)
    assert AuditEvent.objects.filter(kind="evidence_captured", data__job=job.pk).count() == 1
    with pytest.raises(ValueError, match="larger than"):
        handover.evidence_clean({"logs": "x" * (handover.EVIDENCE_MAX_BYTES + 1)})


def test_evidence_for_a_job_not_started_is_a_conflict_and_records_nothing() -> None:
    job = _placed_job()
    with pytest.raises(handover.Conflict):
        handover.agent_job_evidence(host="a", job_id=job.pk, claim=1, evidence={"container": "web"})
    assert not AuditEvent.objects.filter(kind="evidence_captured").exists()


def test_the_spool_keeps_a_report_per_job_attempt_and_claim_across_instances(tmp_path: Any) -> None:
    from fleet.agent import ReportSpool

    spool = ReportSpool(tmp_path / "state")
    body = {"attempt": 1, "claim": 2, "ok": True, "detail": "done"}
    key = spool.add(7, body)
    spool.add(7, body)  # the same report again: still one file
    assert key == "report-7-1-2" and [p.name for p in (tmp_path / "state").iterdir()] == ["report-7-1-2.json"]
    again = ReportSpool(tmp_path / "state")  # a restarted agent
    assert again.pending() == [("report-7-1-2", 7, body)]
    (tmp_path / "state" / "report-8-1-1.json").write_text("{not json")
    assert [k for k, _, _ in again.pending()] == ["report-7-1-2"]  # the broken file is set aside
    assert (tmp_path / "state" / "report-8-1-1.bad").exists()
    again.remove(key)
    assert again.pending() == [] and not (tmp_path / "state" / "report-7-1-2.json").exists()


def test_another_hosts_job_is_forbidden_and_audited() -> None:
    job = _placed_job(host="b")
    with pytest.raises(handover.Forbidden):
        handover.agent_job_start(host="a", job_id=job.pk, claim=1)
    assert AuditEvent.objects.get(kind="agent_refused").data == {
        "host": "a",
        "what": "start",
        "job": job.pk,
        "other_host": "b",
    }
    assert Job.objects.get(pk=job.pk).state == "queued"


def test_a_job_for_a_host_gone_past_the_ttl_is_skipped_host_offline(settings: Any) -> None:
    settings.AUTOHEAL_AGENT_JOB_TTL_SECONDS = 60
    job = _placed_job(host="gone")
    fresh = _placed_job(host="gone")
    Job.objects.filter(pk=job.pk).update(not_before=timezone.now() - timedelta(seconds=61))
    assert handover.jobs_host_offline() == 1
    job.refresh_from_db()
    assert (job.state, job.skip_reason) == ("skipped", "host_offline")
    assert Job.objects.get(pk=fresh.pk).state == "queued"
    assert AuditEvent.objects.get(kind="action_skipped").data["host"] == "gone"


def test_a_job_for_a_connected_host_is_not_expired(settings: Any) -> None:
    settings.AUTOHEAL_AGENT_JOB_TTL_SECONDS = 60
    Agent.objects.create(host="busy")
    job = _placed_job(host="busy")
    Job.objects.filter(pk=job.pk).update(not_before=timezone.now() - timedelta(seconds=61))
    assert handover.jobs_host_offline() == 0


def test_cooldowns_count_per_host_and_target() -> None:
    policy = make_policy(action="restart_container", cooldown_seconds=600)
    done = make_job(policy=policy, alert=make_alert(), host="a")
    Job.objects.filter(pk=done.pk).update(state="ok", started_at=timezone.now())
    on_b = make_job(policy=policy, alert=make_alert(), host="b", attempt=1)
    on_a = make_job(policy=policy, alert=make_alert(), host="a", attempt=1)
    from remediation import safety
    from remediation.execution.facts import job_decision

    limits = safety.limits_from_settings()
    now = timezone.now()
    assert job_decision(job=on_b, alert=on_b.alert, row=None, now=now, limits=limits).verdict == "run"
    assert job_decision(job=on_a, alert=on_a.alert, row=None, now=now, limits=limits).reason == "cooldown"


# --- the API's edges, /api/agents, metrics, /ops/ ------------------------------------------------


def test_bad_agent_requests_get_clear_errors_and_change_nothing(client: Any) -> None:
    token = agent_token_create(host="a", actor="test").token
    auth = {"HTTP_AUTHORIZATION": f"Agent {token}"}
    assert client.post("/api/agent/hello", {"host": "a"}, content_type="application/json").status_code == 401
    answer = client.post("/api/agent/inventory", "not json", content_type="application/json", **auth)
    assert answer.status_code == 400 and "JSON" in answer.json()["error"]
    answer = client.put(
        "/api/agent/inventory", {"host": "a", "containers": [{"labels": {}}]}, content_type="application/json", **auth
    )
    assert answer.status_code == 400 and "name" in answer.json()["error"]
    answer = client.post(
        "/api/agent/events",
        {"host": "a", "container": "web", "health": "sick", "labels": {}},
        content_type="application/json",
        **auth,
    )
    assert answer.status_code == 400
    answer = client.get("/api/agent/jobs/next", {"host": "a", "wait": "0", "start": "yes"}, **auth)
    assert answer.status_code == 400 and "start" in answer.json()["error"]
    answer = client.post(
        "/api/agent/jobs/1/evidence",
        {"host": "a", "claim": 1, "evidence": "logs"},
        content_type="application/json",
        **auth,
    )
    assert answer.status_code == 400 and "evidence" in answer.json()["error"]
    assert not Agent.objects.filter(inventory_at__isnull=False).exists()
    assert not AuditEvent.objects.exclude(kind="agent_token_changed").exists()


def _ops(client: Any, django_user_model: Any) -> Any:
    user = django_user_model.objects.create_user("operator", password="not-used-here-9")
    user.groups.add(Group.objects.get_or_create(name="ops")[0])
    client.force_login(user)
    return client


def test_api_agents_lists_each_agent_for_the_ops_role(client: Any, django_user_model: Any) -> None:
    assert client.get("/api/agents").status_code in (401, 403)
    now = timezone.now()
    Agent.objects.create(host="a", version="0.1.0", last_seen=now, inventory=[{"name": "web"}, {"name": "db"}])
    Agent.objects.create(host="b", version="0.1.0", last_seen=now - timedelta(hours=1))
    _placed_job(host="a")
    Job.objects.filter(host="a").update(state="running")
    body = _ops(client, django_user_model).get("/api/agents").json()
    assert [(a["host"], a["containers"], a["jobs_in_flight"], a["connected"]) for a in body["agents"]] == [
        ("a", 2, 1, True),
        ("b", 0, 0, False),
    ]
    assert set(body["agents"][0]) == {"host", "version", "last_seen", "containers", "jobs_in_flight", "connected"}


def test_metrics_show_connected_agents_and_each_last_contact(client: Any) -> None:
    seen = timezone.now() - timedelta(seconds=5)
    Agent.objects.create(host="a", last_seen=seen)
    Agent.objects.create(host="b", last_seen=seen - timedelta(hours=1))
    text = client.get("/metrics").content.decode()
    assert "autoheal_agents_connected 1.0" in text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("autoheal_agent_last_seen_timestamp_seconds{")
    }
    assert samples['autoheal_agent_last_seen_timestamp_seconds{host="a"}'] == pytest.approx(seen.timestamp(), abs=0.01)
    assert samples['autoheal_agent_last_seen_timestamp_seconds{host="b"}'] < seen.timestamp() - 3000


def test_the_ops_page_lists_agents_and_flags_a_missing_one(client: Any, django_user_model: Any) -> None:
    Agent.objects.create(host="alpha", version="0.1.0", last_seen=timezone.now())
    Agent.objects.create(host="omega", last_seen=timezone.now() - timedelta(hours=2))
    page = _ops(client, django_user_model).get("/ops/").content.decode()
    assert 'id="agents"' in page and 'data-host="alpha"' in page
    assert "Missing: omega" in page
