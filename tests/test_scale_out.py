"""Scaling out: two web processes and three workers on one PostgreSQL and Redis.

A burst of 50 distinct alerts, each delivered twice at the same moment through different web
processes (as an Alertmanager HA pair does), must give 50 incidents, 50 jobs and 50 executions:
never a job lost, never one run twice. One web process is gunicorn (the request/response server of
deploy/gunicorn.conf.py), the other daphne (the ASGI server); every process is a separate OS process
started and stopped here by PID.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from audit.models import AuditEvent
from remediation.models import Alert, Job, Policy
from remediation.tests.exec_helpers import database_url, spawn_manage, stop_process, wait_until

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "scale-out-webhook-token-0123456789"
ALERTS = 50


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": os.environ["AUTOHEAL_TEST_REDIS_URL"],
        "AUTOHEAL_WEBHOOK_TOKENS": TOKEN,
        "AUTOHEAL_DATA_DIR": str(tmp_path / "data"),
        "AUTOHEAL_AUDIT_JSONL": str(tmp_path / "data" / "audit.jsonl"),
        "AUTOHEAL_WEBHOOK_RATE_LIMIT": "100000/60s",
        "AUTOHEAL_RATE_LIMIT": "100000/60s",
        "AUTOHEAL_WEB_WORKERS": "2",
        "PYTHONUNBUFFERED": "1",
    }


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@pytest.fixture
def web_processes(tmp_path: Path) -> Iterator[list[str]]:
    """gunicorn and daphne on sockets bound here to 127.0.0.1:0 and handed over (no port race)."""
    (tmp_path / "data").mkdir()
    # As deploy/docker-compose.yml runs them: each web process with a bounded PostgreSQL pool.
    env = {**_env(tmp_path), "AUTOHEAL_DB_POOL": "true", "AUTOHEAL_DB_POOL_SIZE": "4"}
    servers: list[tuple[subprocess.Popen[bytes], Path]] = []
    urls: list[str] = []
    commands = {
        "gunicorn": lambda fd: [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "deploy/gunicorn.conf.py",
            "--bind",
            f"fd://{fd}",
        ],
        "daphne": lambda fd: [sys.executable, "-m", "daphne", "--fd", str(fd), "autoheal_site.asgi:application"],
    }
    try:
        for name, command in commands.items():
            sock = _listening_socket()
            log = tmp_path / f"{name}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    command(sock.fileno()),
                    cwd=ROOT,
                    env=env,
                    pass_fds=(sock.fileno(),),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            servers.append((process, log))
            urls.append(f"http://127.0.0.1:{sock.getsockname()[1]}")
            sock.close()  # the server holds its own copy
        for (process, log), url in zip(servers, urls, strict=True):
            _wait_ready(process, log, url)
        yield urls
    finally:
        for process, _ in servers:
            stop_process(process)


def _wait_ready(process: subprocess.Popen[bytes], log: Path, url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"web process exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"web process did not answer: {log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {k: v for k, v in _env(tmp_path).items() if k.startswith(("AUTOHEAL_", "REDIS_URL"))}
    started = [
        spawn_manage(["autoheal_worker", "--name", f"scale-{i}"], env=env, log=tmp_path / f"worker-{i}.log")
        for i in range(3)
    ]
    yield started
    for process in started:
        stop_process(process)


def _jobs_logged(text: str, worker: str) -> int:
    """Jobs a worker's log says it ended: one line per job ("job 7 -> ok"), or one line per batch
    that went through together ("jobs 7,8,9 -> ok")."""
    count = 0
    for line in text.splitlines():
        if match := re.search(rf"worker {re.escape(worker)}: jobs? ([0-9,]+) -> ", line):
            count += len(match.group(1).split(","))
    return count


def burst_payloads(fixture_json: Any) -> list[bytes]:
    """50 distinct alerts shaped exactly like a real Alertmanager delivery (one alert each)."""
    template = fixture_json("single-firing.json")
    bodies = []
    for i in range(ALERTS):
        body = copy.deepcopy(template)
        labels = {"alertname": "ScaleOutBurst", "instance": f"node-{i:02d}", "severity": "warning"}
        alert = body["alerts"][0]
        alert["labels"] = labels
        alert["fingerprint"] = f"5ca1e0{i:010x}"
        body["groupLabels"] = {"alertname": "ScaleOutBurst"}
        body["commonLabels"] = labels
        body["groupKey"] = f'{{}}:{{alertname="ScaleOutBurst",instance="node-{i:02d}"}}'
        bodies.append(json.dumps(body).encode())
    return bodies


def test_three_workers_and_two_web_processes_run_every_job_of_a_doubled_burst_exactly_once(
    web_processes, workers, fixture_json, tmp_path
):
    Policy.objects.create(
        name="record-scale-out",
        matchers=['alertname="ScaleOutBurst"'],
        action="log_only",
        target="{{ labels.instance }}",
        cooldown_seconds=0,
        max_actions_per_hour=100,
    )
    bodies = burst_payloads(fixture_json)
    # Every alert goes once to each web process, both deliveries in flight together.
    deliveries = [(url, body) for body in bodies for url in web_processes]

    def post(delivery: tuple[str, bytes]) -> tuple[int, dict[str, Any]]:
        url, body = delivery
        answer = requests.post(
            url + "/alert",
            data=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            timeout=30,
        )
        return answer.status_code, answer.json()

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(post, deliveries))
    print(f"burst of {len(deliveries)} deliveries answered in {time.monotonic() - t0:.2f}s")

    assert [code for code, _ in answers] == [202] * (2 * ALERTS)
    assert sum(body["accepted"] for _, body in answers) == ALERTS
    assert sum(body["duplicates"] for _, body in answers) == ALERTS
    assert sum(body["jobs"] for _, body in answers) == ALERTS

    wait_until(lambda: Job.objects.filter(state=Job.State.OK).count() == ALERTS, timeout=120)
    print(f"all {ALERTS} jobs done {time.monotonic() - t0:.2f}s after the burst began")
    time.sleep(2)  # a wrongly doubled job or execution gets every chance to show up

    assert Alert.objects.count() == ALERTS
    jobs = list(Job.objects.all())
    assert len(jobs) == ALERTS
    assert {job.state for job in jobs} == {Job.State.OK}
    assert all(job.attempts == 1 for job in jobs)
    started = Counter(e.data["job"] for e in AuditEvent.objects.filter(kind="action_started"))
    finished = Counter(e.data["job"] for e in AuditEvent.objects.filter(kind="action_ok"))
    every_job = {job.pk: 1 for job in jobs}
    assert dict(started) == every_job
    assert dict(finished) == every_job
    assert AuditEvent.objects.filter(kind="action_fail").count() == 0
    # Which worker ran what (from their logs): reported, not asserted, since one fast worker may
    # legitimately take most of a burst.
    share = {
        f"scale-{i}": _jobs_logged(process_log.read_text(errors="replace"), f"scale-{i}")
        for i, process_log in enumerate(sorted(tmp_path.glob("worker-*.log")))
    }
    assert sum(share.values()) == ALERTS
    print(f"jobs per worker: {share}")
