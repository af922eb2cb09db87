"""The fleet on real engines: three private dockerds as hosts A, B and C, three agent processes,
one central (daphne and a worker) on PostgreSQL.

Every outcome is one a user would notice: which container's ``State.StartedAt`` changed, the job's
state and skip reason, the audit events (with ``data.host``), the HTTP answers to an agent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from audit.models import AuditEvent
from fleet.models import Agent, AgentReport
from fleet.tests.harness import CuttableProxy, DockerHosts, FleetAgents, FleetCentral, wait_for
from fleet.tokens import agent_token_create, agent_token_revoke
from remediation import safety
from remediation.models import Job, Policy
from remediation.tests.exec_helpers import database_url

pytestmark = [pytest.mark.postgres, pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HOSTS = ["A", "B", "C"]
CENTRAL_ENV = {
    # Short clocks so leases, TTLs and "connected" play out within a test.
    "AUTOHEAL_LEASE_SECONDS": "3",
    "AUTOHEAL_AGENT_JOB_TTL_SECONDS": "8",
    "AUTOHEAL_AGENT_CONNECTED_SECONDS": "4",
    "AUTOHEAL_AGENT_POLL_SECONDS": "2",
    "AUTOHEAL_WORKER_POLL_SECONDS": "1",
}


@pytest.fixture(scope="module")
def hosts(docker_client: Any) -> Iterator[DockerHosts]:
    fleet = DockerHosts(HOSTS)
    try:
        fleet.start(docker_client)
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def fleet(hosts: DockerHosts, tmp_path: Path, transactional_db: None) -> Iterator[tuple[FleetCentral, FleetAgents]]:
    # transactional_db first: the central must be given the test database's name, not the default's.
    for host in hosts.hosts.values():
        host.clear()
    central = FleetCentral(database_url=database_url(), workdir=tmp_path, env=CENTRAL_ENV)
    agents = FleetAgents(central=central, hosts=hosts, workdir=tmp_path)
    try:
        central.start()
        for name in HOSTS:
            agents.tokens[name] = agent_token_create(host=name, actor="test").token
        yield central, agents
    finally:
        agents.stop_all()
        central.stop()
        for host in hosts.hosts.values():
            host.clear()


def policy(name: str, *, host: str = "", **fields: Any) -> Policy:
    values: dict[str, Any] = {
        "name": name,
        "matchers": [f'alertname="{name}"'],
        "action": "restart_container",
        "target": "{{ labels.container }}",
        "host": host,
        "cooldown_seconds": 0,
        "max_actions_per_hour": 5,
        "params": {"timeout_seconds": 30},
    }
    values.update(fields)
    return Policy.objects.create(**values)


def start_agents(agents: FleetAgents, names: list[str], *, containers: dict[str, list[str]] | None = None) -> None:
    """Start the agents and wait until each is connected and has sent its inventory."""
    for name in names:
        agents.start(name)
    for name in names:
        wanted = set((containers or {}).get(name, []))
        wait_for(
            lambda name=name, wanted=wanted: Agent.objects.filter(host=name, inventory_at__isnull=False).exists()
            and wanted <= set(Agent.objects.get(host=name).container_names),
            what=f"agent {name} connected with its inventory",
        )


def job_done(**filters: Any) -> Job:
    return wait_for(
        lambda: Job.objects.filter(**filters).exclude(state__in=["queued", "running"]).first(),
        what=f"a finished job {filters}",
    )


def started_events(job: Job) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(kind="action_started", data__job=job.pk))


def test_an_alert_with_host_a_restarts_a_s_web_and_leaves_b_s_alone(hosts: DockerHosts, fleet: Any) -> None:
    central, agents = fleet
    for name in ("A", "B"):
        hosts[name].container("web")
    before = {name: hosts[name].started_at("web") for name in ("A", "B")}
    policy("WebDown", host="{{ labels.host }}")
    start_agents(agents, ["A", "B"], containers={"A": ["web"], "B": ["web"]})

    assert central.alert({"alertname": "WebDown", "container": "web", "host": "A"}).status_code == 202

    job = job_done(policy_name="WebDown")
    assert (job.state, job.host) == ("ok", "A"), job.result
    assert hosts["A"].started_at("web") != before["A"]
    assert hosts["B"].started_at("web") == before["B"]
    assert [e.data["host"] for e in started_events(job)] == ["A"]
    assert AuditEvent.objects.get(kind="action_ok", data__job=job.pk).data["host"] == "A"


def test_a_unique_name_heals_on_its_host_and_a_shared_name_without_host_is_ambiguous(
    hosts: DockerHosts, fleet: Any
) -> None:
    central, agents = fleet
    hosts["A"].container("web")
    hosts["B"].container("web")
    hosts["B"].container("api")
    before_api = hosts["B"].started_at("api")
    policy("ApiDown")
    policy("WebDown")
    start_agents(agents, ["A", "B"], containers={"A": ["web"], "B": ["web", "api"]})

    central.alert({"alertname": "ApiDown", "container": "api"})
    job = job_done(policy_name="ApiDown")
    assert (job.state, job.host) == ("ok", "B"), job.result
    assert hosts["B"].started_at("api") != before_api

    before_web = {name: hosts[name].started_at("web") for name in ("A", "B")}
    central.alert({"alertname": "WebDown", "container": "web"})
    skipped = wait_for(
        lambda: AuditEvent.objects.filter(kind="action_skipped", policy="WebDown").first(), what="ambiguous skip"
    )
    assert skipped.data["reason"] == "ambiguous_target"
    assert skipped.data["hosts"] == ["A", "B"]
    assert not Job.objects.filter(policy_name="WebDown").exists()
    assert {name: hosts[name].started_at("web") for name in ("A", "B")} == before_web


def test_a_health_event_on_host_c_heals_c_s_container_through_the_central(hosts: DockerHosts, fleet: Any) -> None:
    _central, agents = fleet
    box = hosts["C"].container("queue")
    hosts["A"].container("queue")
    before_a = hosts["A"].started_at("queue")
    policy("ContainerUnhealthy", host="{{ labels.host }}")
    start_agents(agents, ["C"], containers={"C": ["queue"]})
    wait_for(lambda: hosts["C"].health("queue") == "healthy", what="queue healthy")
    before = hosts["C"].started_at("queue")

    box.exec_run(["rm", "-f", "/tmp/healthy"])

    job = job_done(policy_name="ContainerUnhealthy")
    assert (job.state, job.host, job.alert.source) == ("ok", "C", "docker"), job.result
    assert job.alert.labels["host"] == "C"
    assert hosts["C"].started_at("queue") != before
    assert hosts["A"].started_at("queue") == before_a
    # After the restart the health check passes again and the agent's event resolves the incident.
    wait_for(lambda: Job.objects.get(pk=job.pk).alert.status == "resolved", what="incident resolved")


def test_an_agent_killed_mid_action_leaves_the_job_unknown_and_it_is_never_run_again(
    hosts: DockerHosts, fleet: Any
) -> None:
    central, agents = fleet
    # PID 1 is a plain sleep that ignores SIGTERM: the restart waits the whole stop timeout.
    hosts["A"].container("slow", init=False)
    policy("SlowDown", host="{{ labels.host }}", params={"timeout_seconds": 60, "stop_timeout_seconds": 8})
    start_agents(agents, ["A"], containers={"A": ["slow"]})

    central.alert({"alertname": "SlowDown", "container": "slow", "host": "A"})
    job = wait_for(lambda: Job.objects.filter(policy_name="SlowDown", started_at__isnull=False).first())
    agents.stop("A", sig=9)

    unknown = wait_for(lambda: Job.objects.filter(pk=job.pk, state="unknown").first(), what="job unknown")
    assert AuditEvent.objects.get(kind="action_unknown", data__job=job.pk).data["host"] == "A"
    start_agents(agents, ["A"])
    time.sleep(3)  # several long polls of the restarted agent
    assert Job.objects.get(pk=unknown.pk).state == "unknown"
    assert len(started_events(job)) == 1
    assert Job.objects.filter(policy_name="SlowDown").count() == 1


def test_a_job_waits_for_its_host_within_the_ttl_and_is_host_offline_past_it(hosts: DockerHosts, fleet: Any) -> None:
    central, agents = fleet
    hosts["B"].container("web")
    hosts["C"].container("web")
    before_b = hosts["B"].started_at("web")
    policy("WebDown", host="{{ labels.host }}")
    start_agents(agents, ["B", "C"], containers={"B": ["web"], "C": ["web"]})
    assert agents.stop("B") == 0  # SIGTERM: a clean exit
    assert agents.stop("C") == 0

    central.alert({"alertname": "WebDown", "container": "web", "host": "B"})
    central.alert({"alertname": "WebDown", "container": "web", "host": "C"})
    time.sleep(1.5)
    waiting = Job.objects.get(policy_name="WebDown", host="B")
    # Queued, or handed to a long poll the stopped agent no longer hears: never started.
    assert waiting.state in ("queued", "running") and waiting.started_at is None

    start_agents(agents, ["B"])
    job = job_done(pk=waiting.pk)
    assert job.state == "ok", job.result
    assert len(started_events(job)) == 1
    assert hosts["B"].started_at("web") != before_b

    offline = job_done(policy_name="WebDown", host="C")
    assert (offline.state, offline.skip_reason) == ("skipped", "host_offline")
    event = AuditEvent.objects.get(kind="action_skipped", data__job=offline.pk)
    assert (event.data["reason"], event.data["host"]) == ("host_offline", "C")


def test_a_token_is_good_for_its_host_only_and_a_revoked_token_is_refused(hosts: DockerHosts, fleet: Any) -> None:
    central, agents = fleet
    hosts["B"].container("web")
    policy("WebDown", host="{{ labels.host }}")
    token_a = agents.tokens["A"]
    header = {"Authorization": f"Agent {token_a}"}
    url = central.url + "/api/agent/"

    # Asking for host B's jobs with host A's token.
    answer = requests.get(url + "jobs/next", params={"host": "B", "wait": 0}, headers=header, timeout=10)
    assert answer.status_code == 403
    refused = AuditEvent.objects.filter(kind="agent_refused").order_by("id")
    assert refused.count() == 1 and refused[0].data["host"] == "A" and refused[0].data["other_host"] == "B"

    # Starting or reporting host B's job while naming host A.
    central.alert({"alertname": "WebDown", "container": "web", "host": "B"})
    job = wait_for(lambda: Job.objects.filter(policy_name="WebDown").first())
    for path, body in (
        (f"jobs/{job.pk}/start", {"claim": 1}),
        (f"jobs/{job.pk}/report", {"claim": 1, "attempt": 1, "ok": True}),
    ):
        answer = requests.post(url + path, json={"host": "A", **body}, headers=header, timeout=10)
        assert answer.status_code == 403, answer.text
    assert AuditEvent.objects.filter(kind="agent_refused", data__job=job.pk).count() == 2
    assert Job.objects.get(pk=job.pk).state == "queued"

    # Inventory for another host.
    answer = requests.put(url + "inventory", json={"host": "B", "containers": []}, headers=header, timeout=10)
    assert answer.status_code == 403

    row = agent_token_create(host="A", actor="test")
    agent_token_revoke(token_id=row.row.pk, actor="test")
    answer = requests.post(
        url + "hello", json={"host": "A"}, headers={"Authorization": f"Agent {row.token}"}, timeout=10
    )
    assert answer.status_code == 401
    assert AuditEvent.objects.filter(kind="agent_token_changed", data__operation="revoked").count() == 1


def test_with_the_kill_switch_off_or_in_dry_run_agents_run_nothing(hosts: DockerHosts, fleet: Any) -> None:
    central, agents = fleet
    hosts["A"].container("web")
    before = hosts["A"].started_at("web")
    policy("WebDown", host="{{ labels.host }}")
    start_agents(agents, ["A"], containers={"A": ["web"]})

    safety.switch_set(enabled=False, actor="test", reason="maintenance")
    central.alert({"alertname": "WebDown", "container": "web", "host": "A", "try": "1"})
    off = job_done(policy_name="WebDown", alert__labels__try="1")
    assert (off.state, off.skip_reason) == ("skipped", "disabled"), off.result

    safety.switch_set(enabled=True, dry_run=True, actor="test", reason="canary")
    central.alert({"alertname": "WebDown", "container": "web", "host": "A", "try": "2"})
    dry = job_done(policy_name="WebDown", alert__labels__try="2")
    assert (dry.state, dry.skip_reason) == ("skipped", "dry_run")
    assert AuditEvent.objects.get(kind="action_dry_run", data__job=dry.pk).data["host"] == "A"

    assert not AuditEvent.objects.filter(kind="action_started").exists()
    assert hosts["A"].started_at("web") == before


def test_sigterm_mid_action_lets_the_action_finish_and_be_reported_then_the_agent_exits(
    hosts: DockerHosts, fleet: Any
) -> None:
    central, agents = fleet
    hosts["A"].container("slow", init=False)  # the restart waits the 4 s stop timeout
    before = hosts["A"].started_at("slow")
    policy("SlowDown", host="{{ labels.host }}", params={"timeout_seconds": 60, "stop_timeout_seconds": 4})
    start_agents(agents, ["A"], containers={"A": ["slow"]})

    central.alert({"alertname": "SlowDown", "container": "slow", "host": "A"})
    job = wait_for(lambda: Job.objects.filter(policy_name="SlowDown", started_at__isnull=False).first())
    assert agents.stop("A") == 0  # SIGTERM while the restart runs

    job.refresh_from_db()
    assert job.state == "ok", job.result  # reported before the agent exited, not left to the lease
    assert hosts["A"].started_at("slow") != before
    assert AuditEvent.objects.get(kind="action_ok", data__job=job.pk).data["host"] == "A"


def restart_began(host: Any, name: str, since: datetime) -> bool:
    """Whether the engine has sent the container its stop signal since ``since`` (a restart began)."""
    events = host.client.api.events(
        since=since, until=datetime.now(UTC), filters={"container": name, "event": "kill"}, decode=True
    )
    return any(True for _ in events)


def _cut_off_mid_restart(
    hosts: DockerHosts, central: Any, agents: Any, proxy: CuttableProxy, *, stop_timeout: int
) -> tuple[Job, str]:
    """Agent A, connected through ``proxy``, restarts ``slow`` (which waits ``stop_timeout``
    seconds to stop); the proxy is cut once the restart has begun on the host. Returns the
    started job and the container's StartedAt before the restart."""
    hosts["A"].container("slow", init=False)  # the restart waits the stop timeout
    before = hosts["A"].started_at("slow")
    policy("SlowDown", host="{{ labels.host }}", params={"timeout_seconds": 60, "stop_timeout_seconds": stop_timeout})
    agents.start("A", server=f"http://127.0.0.1:{proxy.port}")
    wait_for(
        lambda: "slow" in (Agent.objects.filter(host="A").first() or Agent()).container_names,
        what="agent A connected through the proxy",
    )
    since = datetime.now(UTC) - timedelta(seconds=1)
    central.alert({"alertname": "SlowDown", "container": "slow", "host": "A"})
    job = wait_for(lambda: Job.objects.filter(policy_name="SlowDown", started_at__isnull=False).first())
    # Cut only once the agent has had the central's go and begun the restart (the engine's SIGTERM
    # to the container): cut earlier, the agent never acts, which is another case.
    wait_for(lambda: restart_began(hosts["A"], "slow", since), what="the restart begun on the host")
    proxy.cut()
    return job, before


def test_an_agent_that_lost_the_network_reports_when_it_is_back_and_the_report_is_applied_once(
    hosts: DockerHosts, fleet: Any
) -> None:
    central, agents = fleet
    proxy = CuttableProxy(int(central.url.rsplit(":", 1)[1]))
    try:
        # Heartbeats stop reaching the central: the lease runs out.
        job, before = _cut_off_mid_restart(hosts, central, agents, proxy, stop_timeout=6)
        wait_for(lambda: Job.objects.filter(pk=job.pk, state="unknown").exists(), what="job unknown")
        wait_for(lambda: hosts["A"].started_at("slow") != before, what="the restart done on the host")
        proxy.restore()

        report = wait_for(lambda: AgentReport.objects.filter(job=job).first(), timeout=90, what="the late report")
        assert report.disposition == "late" and report.ok
        ok = AuditEvent.objects.get(kind="action_ok", data__job=job.pk)
        assert ok.data["after_unknown"] is True and ok.data["host"] == "A"
        assert AuditEvent.objects.filter(kind="action_unknown", data__job=job.pk).count() == 1
        time.sleep(2)  # the agent is polling again: nothing is re-run
        assert len(started_events(job)) == 1
        assert AgentReport.objects.filter(job=job).count() == 1
        assert Job.objects.filter(policy_name="SlowDown").count() == 1
    finally:
        proxy.close()


def test_an_agent_run_restart_keeps_the_container_s_evidence_in_the_central_audit_trail(
    hosts: DockerHosts, fleet: Any
) -> None:
    central, agents = fleet
    engine = hosts["A"].client
    engine.containers.run(
        "autoheal-test-busybox:latest",
        ["sh", "-c", "echo 'login with password=hunter2-secret'; echo still-here; exec sleep 100000"],
        name="web",
        labels={"autoheal.enable": "true"},
        detach=True,
        init=True,
        network_mode="none",
    )
    hosts["A"].container("quiet")
    policy("WebDown", host="{{ labels.host }}")
    policy("QuietDown", host="{{ labels.host }}", capture_evidence=False)
    start_agents(agents, ["A"], containers={"A": ["web", "quiet"]})

    central.alert({"alertname": "WebDown", "container": "web", "host": "A"})
    job = job_done(policy_name="WebDown")
    assert job.state == "ok", job.result
    event = AuditEvent.objects.get(kind="evidence_captured", data__job=job.pk)
    assert (event.data["stage"], event.data["host"], event.data["action"]) == (
        "before_action",
        "A",
        "restart_container",
    )
    assert (event.policy, event.target, event.fingerprint) == ("WebDown", "web", job.alert.fingerprint)
    evidence = event.data["evidence"]
    assert evidence["container"] == "web" and evidence["state"]["Running"] is True
    assert "still-here" in evidence["logs"] and "password=[redacted]" in evidence["logs"]
    assert "hunter2-secret" not in str(event.data)
    # Recorded before the action's outcome, as for a job the central worker runs.
    started = AuditEvent.objects.get(kind="action_started", data__job=job.pk)
    ok = AuditEvent.objects.get(kind="action_ok", data__job=job.pk)
    assert started.pk < event.pk < ok.pk

    central.alert({"alertname": "QuietDown", "container": "quiet", "host": "A"})
    quiet = job_done(policy_name="QuietDown")
    assert quiet.state == "ok", quiet.result
    assert not AuditEvent.objects.filter(kind="evidence_captured", data__job=quiet.pk).exists()


def test_a_report_kept_while_the_central_was_away_survives_an_agent_restart_and_arrives_once(
    hosts: DockerHosts, fleet: Any
) -> None:
    central, agents = fleet
    proxy = CuttableProxy(int(central.url.rsplit(":", 1)[1]))
    try:
        job, before = _cut_off_mid_restart(hosts, central, agents, proxy, stop_timeout=4)
        wait_for(lambda: hosts["A"].started_at("slow") != before, what="the restart done on the host")
        spool = agents.state_dir("A")
        kept = wait_for(lambda: list(spool.glob("report-*.json")), what="the report kept in the spool")
        assert [path.name for path in kept] == [f"report-{job.pk}-{job.attempt}-1.json"]
        assert agents.stop("A") == 0  # SIGTERM: the last try fails (cut off), the file stays
        assert [path.name for path in spool.glob("report-*.json")] == [kept[0].name]
        assert not AgentReport.objects.filter(job=job).exists()
        assert agents.tokens["A"] not in kept[0].read_text()

        proxy.restore()
        agents.start("A", server=f"http://127.0.0.1:{proxy.port}")
        report = wait_for(lambda: AgentReport.objects.filter(job=job).first(), timeout=60, what="the report")
        assert report.ok and report.disposition in ("applied", "late")
        wait_for(lambda: not list(spool.glob("report-*.json")), what="the spool emptied")
        time.sleep(2)  # the agent polls again: nothing is sent or run twice
        assert AgentReport.objects.filter(job=job).count() == 1
        assert len(started_events(job)) == 1
        assert AuditEvent.objects.filter(kind__in=["action_ok", "action_fail"], data__job=job.pk).count() == 1
        # The evidence read before the restart: recorded once, by its own request or with the report.
        assert AuditEvent.objects.filter(kind="evidence_captured", data__job=job.pk).count() == 1
    finally:
        proxy.close()
