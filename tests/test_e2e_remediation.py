"""End to end on PostgreSQL and a real dockerd: webhook in, worker processes, container restarted once.

The workers here are separate OS processes (``manage.py autoheal_worker``) pointed at the test
database, as in production; they are stopped by PID at the end of each test.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from audit.models import AuditEvent
from conftest import started_at
from remediation.models import Alert, Job
from remediation.tests.exec_helpers import (
    allowed_test_programs,
    drain,
    events,
    make_alert,
    make_job,
    make_policy,
    spawn_manage,
    stop_process,
    wait_until,
)
from remediation.worker import Worker

pytestmark = [pytest.mark.postgres, pytest.mark.docker, pytest.mark.django_db(transaction=True)]

TOKEN = "e2e-webhook-token"


@pytest.fixture
def webhook(settings: Any) -> Callable[[bytes], int]:
    settings.AUTOHEAL_WEBHOOK_TOKENS = [TOKEN]

    def post(body: bytes) -> int:
        try:
            answer = Client().post(
                "/alert", data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
            )
            return answer.status_code
        finally:
            connection.close()

    return post


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def start(count: int = 1, **env: str) -> list[Any]:
        # The operator lets the workers run the shell the command policies below use.
        env.setdefault("AUTOHEAL_COMMAND_ALLOW", ",".join(allowed_test_programs()))
        for index in range(count):
            log = tmp_path / f"worker-{len(started)}.log"
            started.append(spawn_manage(["autoheal_worker", "--name", f"e2e-{len(started)}-{index}"], env=env, log=log))
        return started[-count:]

    yield start
    for process in started:
        stop_process(process)


def restarts(docker_client: Any, container: Any, since: float) -> int:
    """How many `restart` events dockerd emitted for the container since ``since``."""
    stream = docker_client.events(
        since=int(since),
        until=int(time.time()) + 1,
        filters={"container": container.id, "event": "restart"},
        decode=True,
    )
    return sum(1 for _ in stream)


def sleeper(make_container: Callable[..., Any], docker_client: Any, **kwargs: Any) -> Any:
    """The container the captured fixture names (ah-sleeper).

    Container names are global to the engine: if another run holds the name, wait for it to go
    (never remove a container this test did not create).
    """
    import docker.errors

    deadline = time.monotonic() + 60
    while True:
        try:
            return make_container(name="ah-sleeper", **kwargs)
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def restart_policy(**fields: Any) -> Any:
    values = {
        "name": "restart-flagged",
        "matchers": ['alertname="AutohealTestFlag"'],
        "action": "restart_container",
        "target": "{{ labels.container }}",
        "params": {"timeout_seconds": 20},
        "cooldown_seconds": 300,
        "max_actions_per_hour": 3,
    }
    values.update(fields)
    return make_policy(**values)


def test_a_real_payload_redelivered_20_times_to_two_workers_restarts_the_container_once(
    webhook, workers, make_container, docker_client, docker_settings, fixture_body
):
    container = sleeper(make_container, docker_client, labels={"autoheal.enable": "true"})
    time.sleep(1.5)
    restart_policy()
    before = started_at(container)
    t0 = time.time() - 1
    workers(2)
    body = fixture_body("single-firing.json")
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(webhook(body))) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [202] * 20
    wait_until(lambda: Job.objects.filter(state__in=["ok", "fail"]).exists(), timeout=60)
    time.sleep(2)  # give a wrongly duplicated job every chance to show up
    assert Job.objects.count() == 1
    assert Job.objects.get().state == "ok"
    assert started_at(container) != before
    assert restarts(docker_client, container, t0) == 1
    assert len(events("action_started")) == 1
    assert events("action_ok")[0].target == "ah-sleeper"


def test_a_resolved_incident_restarts_nothing(webhook, make_container, docker_client, docker_settings, fixture_body):
    container = sleeper(make_container, docker_client, labels={"autoheal.enable": "true"})
    restart_policy()
    before = started_at(container)
    assert webhook(fixture_body("single-firing.json")) == 202
    assert webhook(fixture_body("single-resolved.json")) == 202
    drain()
    assert started_at(container) == before
    assert [e.data["reason"] for e in events("action_skipped")] == ["resolved"]
    assert not events("action_started")


def test_a_container_without_the_opt_in_label_is_never_touched(
    webhook, make_container, docker_client, docker_settings, fixture_body
):
    container = sleeper(make_container, docker_client, labels={"team": "web"})
    restart_policy()
    before = started_at(container)
    t0 = time.time() - 1
    assert webhook(fixture_body("single-firing.json")) == 202
    drain()
    assert started_at(container) == before
    assert restarts(docker_client, container, t0) == 0
    skipped = events("action_skipped")
    assert [e.data["reason"] for e in skipped] == ["not_allowed"]
    assert "has not opted in" in skipped[0].message


@pytest.mark.parametrize("mode", ["kill_switch_off", "dry_run_on"])
def test_with_the_kill_switch_off_or_dry_run_on_docker_sees_no_restart(
    mode, settings, webhook, make_container, docker_client, docker_settings, fixture_body
):
    if mode == "kill_switch_off":
        settings.AUTOHEAL_ENABLED = False
    else:
        settings.AUTOHEAL_DRY_RUN = True
    container = sleeper(make_container, docker_client, labels={"autoheal.enable": "true"})
    restart_policy()
    before = started_at(container)
    t0 = time.time() - 1
    assert webhook(fixture_body("single-firing.json")) == 202
    drain()
    assert started_at(container) == before
    assert restarts(docker_client, container, t0) == 0
    if mode == "kill_switch_off":
        skipped = events("action_skipped")[0]
        assert skipped.data["reason"] == "disabled" and "AUTOHEAL_ENABLED" in skipped.message
    else:
        assert "AUTOHEAL_DRY_RUN" in events("action_dry_run")[0].message
    assert not events("action_started")


def test_a_worker_killed_mid_action_leaves_the_job_unknown_and_it_is_never_rerun(workers, tmp_path: Path):
    pidfile = tmp_path / "action.pid"
    policy = make_policy(
        action="command", params={"argv": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"], "timeout_seconds": 60}
    )
    job = make_job(policy=policy, alert=make_alert())
    (first,) = workers(1, AUTOHEAL_LEASE_SECONDS="2")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    # The action's process was started by the worker we killed: end it by its PID.
    with contextlib.suppress(ProcessLookupError):
        import os

        os.kill(int(pidfile.read_text()), signal.SIGKILL)
    workers(1, AUTOHEAL_LEASE_SECONDS="2")
    wait_until(lambda: Job.objects.get(pk=job.pk).state == "unknown", timeout=30)
    time.sleep(3)  # several more ticks of the surviving worker
    assert Job.objects.get(pk=job.pk).state == "unknown"
    assert len(events("action_started")) == 1
    unknown = events("action_unknown")
    assert len(unknown) == 1 and "will not be repeated" in unknown[0].message


def test_sigterm_lets_the_running_action_finish_then_the_worker_exits(workers, tmp_path: Path):
    done = tmp_path / "done"
    policy = make_policy(action="command", params={"argv": ["sh", "-c", f"sleep 2; touch {done}"]})
    job = make_job(policy=policy, alert=make_alert())
    (worker,) = workers(1)
    wait_until(lambda: events("action_started"), timeout=30)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert done.exists()
    assert Job.objects.get(pk=job.pk).state == "ok"
    assert len(events("action_ok")) == 1


def _tick_until(predicate: Callable[[], Any], *, timeout: float) -> None:
    worker = Worker(name="e2e-inproc")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.tick()
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_a_container_that_stays_unhealthy_is_restarted_at_most_the_budget_then_escalated(
    settings, make_container, docker_client, docker_settings
):
    settings.AUTOHEAL_BACKOFF_BASE_SECONDS = 1
    # Opted in by the policy's allow-list rather than the label, so that no Docker watcher that
    # another process runs against the same engine reacts to this always-unhealthy container.
    container = make_container(name=f"ah-flaky-{uuid.uuid4().hex[:8]}", healthy=False)
    policy = restart_policy(
        max_actions_per_hour=2, verify_within_seconds=2, params={"timeout_seconds": 2, "allow": [container.name]}
    )
    alert = make_alert(labels={"alertname": "AutohealTestFlag", "container": container.name})
    make_job(policy=policy, alert=alert, target=container.name)
    t0 = time.time() - 1
    _tick_until(lambda: events("incident_escalated"), timeout=60)
    assert restarts(docker_client, container, t0) == 2
    assert [j.state for j in Job.objects.filter(alert=alert).order_by("attempt")] == ["fail", "fail"]
    escalated = events("incident_escalated")
    assert len(escalated) == 1 and escalated[0].data == {**escalated[0].data, "escalated": True, "attempts": 2}
    for _ in range(10):  # nothing more happens for this incident
        Worker(name="after").tick()
    assert restarts(docker_client, container, t0) == 2


def test_a_container_that_recovers_yields_verified_with_a_time_to_remediate(
    webhook, make_container, docker_client, docker_settings, fixture_json
):
    container = make_container(labels={"autoheal.enable": "true"})
    restart_policy()
    # The captured delivery, pointed at this test's container (a payload derived from the fixture).
    firing = fixture_json("single-firing.json")
    for alert in firing["alerts"]:
        alert["labels"]["container"] = container.name
    assert webhook(json.dumps(firing).encode()) == 202
    _tick_until(lambda: events("action_ok"), timeout=60)
    resolved = json.loads(json.dumps(firing))
    resolved["status"] = "resolved"
    resolved["alerts"][0]["status"] = "resolved"
    resolved["alerts"][0]["endsAt"] = "2026-11-27T11:05:10.362Z"
    assert webhook(json.dumps(resolved).encode()) == 202
    _tick_until(lambda: events("action_verified"), timeout=30)
    verified = events("action_verified")[0]
    assert verified.data["time_to_remediate_seconds"] == 105.0
    assert Alert.objects.get().status == "resolved"
    assert AuditEvent.objects.filter(kind="action_ineffective").count() == 0
