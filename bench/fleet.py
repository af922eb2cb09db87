"""The fleet: three private dockerds as hosts, three agent processes, one central on PostgreSQL.

    .venv/bin/python -m bench.fleet [--trials 10] [--jobs 60]

Measures, each from a clock that is not the one being measured where that is possible:

* heal through an agent: a container on host A turns unhealthy; from the daemon's own
  ``health_status: unhealthy`` event to its ``restart`` event, both read from host A's event stream
  (the agent forwards the event, the central queues the job, the agent restarts the container);
* central job -> agent ``action_started``: the job's ``queued_at`` (intake's commit time) to the
  ``action_started`` audit event's ``ts`` (the start the agent asked for, decided centrally);
* the same for a job the central worker runs itself (local mode), in the same run, as the baseline;
* throughput: N command jobs (``true``) queued in one delivery, for one agent, then spread over
  three agents: jobs per second from the first queued job to the last finished one.

Its own database (``AUTOHEAL_BENCH_DATABASE_URL``, default ``autoheal_fleet_bench``), recreated for
the run; the dockerds, processes and containers it starts are stopped by PID and removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import db

HOSTS = ["A", "B", "C"]
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/autoheal_fleet_bench"
CENTRAL_ENV = {
    "AUTOHEAL_CIRCUIT_MAX_ACTIONS": "100000",
    "AUTOHEAL_CIRCUIT_MAX_FAILURES": "100000",
    "AUTOHEAL_BACKOFF_BASE_SECONDS": "1",
    "AUTOHEAL_BACKOFF_MAX_SECONDS": "2",
    "AUTOHEAL_LOG_LEVEL": "WARNING",
}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values) * 1000:.0f} ms, p90 {_pct(values, 0.9) * 1000:.0f} ms, "
        f"min {min(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms (n={len(values)})"
    )


def _policies() -> None:
    from remediation.models import Action, Policy

    common = {"cooldown_seconds": 0, "max_actions_per_hour": 100000, "host": "{{ labels.host }}"}
    Policy.objects.create(
        name="bench-fleet-heal",
        matchers=['alertname="ContainerUnhealthy"'],
        action=Action.RESTART_CONTAINER,
        target="{{ labels.container }}",
        params={"timeout_seconds": 10},
        **common,
    )
    Policy.objects.create(
        name="bench-fleet-local",
        matchers=['alertname="BenchLocal"'],
        action=Action.COMMAND,
        target="{{ labels.container }}",
        params={"argv": ["true"], "timeout_seconds": 10},
        cooldown_seconds=0,
        max_actions_per_hour=100000,
    )
    Policy.objects.create(
        name="bench-fleet-command",
        matchers=['alertname="BenchCommand"'],
        action=Action.COMMAND,
        target="{{ labels.container }}",
        params={"argv": ["true"], "timeout_seconds": 10},
        **common,
    )


def _daemon_events(client: Any, since: float, until: float, name: str) -> tuple[float | None, float | None]:
    """(unhealthy, restart) times of one container from the daemon's event stream."""
    unhealthy = restart = None
    for event in client.events(decode=True, since=since, until=until, filters={"type": "container", "container": name}):
        status = str(event.get("status") or event.get("Action") or "")
        at = int(event.get("timeNano") or 0) / 1e9
        if status == "health_status: unhealthy" and unhealthy is None:
            unhealthy = at
        elif status == "restart" and unhealthy is not None and restart is None:
            restart = at
    return unhealthy, restart


def heal_trials(hosts: Any, trials: int) -> list[float]:
    from remediation.models import Job

    host = hosts["A"]
    times = []
    for index in range(trials):
        name = f"bench-fleet-heal-{index}-{uuid.uuid4().hex[:6]}"
        box = host.container(name)
        deadline = time.monotonic() + 30
        while host.health(name) != "healthy" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the agent's inventory has the container
        since = time.time() - 1
        box.exec_run(["rm", "-f", "/tmp/healthy"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job = Job.objects.filter(target=name).exclude(state__in=["queued", "running"]).first()
            if job is not None:
                break
            time.sleep(0.05)
        unhealthy, restart = _daemon_events(host.client, since, time.time() + 1, name)
        if unhealthy is not None and restart is not None:
            times.append(restart - unhealthy)
        box.remove(force=True)
    return times


def _deliver(central: Any, alerts: list[dict[str, str]]) -> None:
    import requests

    from fleet.tests.harness import WEBHOOK_TOKEN
    from remediation.docker_watch import fingerprint

    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    body = {
        "version": "4",
        "receiver": "autoheal",
        "status": "firing",
        "groupKey": "{}:{}",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {},
                "startsAt": now,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": fingerprint(labels),
            }
            for labels in alerts
        ],
    }
    answer = requests.post(
        central.url + "/alert", json=body, headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, timeout=30
    )
    answer.raise_for_status()


def handover_trials(central: Any, trials: int, *, alertname: str = "BenchCommand", host: str = "A") -> list[float]:
    from audit.models import AuditEvent
    from remediation.models import Job

    times = []
    for index in range(trials):
        name = f"h{index}-{uuid.uuid4().hex[:6]}"
        labels = {"alertname": alertname, "container": name, **({"host": host} if host else {})}
        _deliver(central, [labels])
        deadline = time.monotonic() + 30
        job = None
        while time.monotonic() < deadline:
            job = Job.objects.filter(target=name).exclude(state__in=["queued", "running"]).first()
            if job is not None:
                break
            time.sleep(0.02)
        if job is None:
            continue
        # With the sealer (PostgreSQL's default chain mode) an event joins the table a moment after
        # its transaction: wait for it rather than leave the trial out.
        started = None
        deadline = time.monotonic() + 10
        while started is None and time.monotonic() < deadline:
            started = AuditEvent.objects.filter(kind="action_started", data__job=job.pk).first()
            if started is None:
                time.sleep(0.05)
        if started is not None:
            times.append((started.ts - job.queued_at).total_seconds())
        time.sleep(0.2)  # the agent is back in its long poll, as in steady state
    return times


def throughput(central: Any, jobs: int, hosts: list[str]) -> float:
    from remediation.models import Job

    tag = uuid.uuid4().hex[:6]
    alerts = [
        {"alertname": "BenchCommand", "container": f"t{tag}-{i}", "host": hosts[i % len(hosts)]} for i in range(jobs)
    ]
    _deliver(central, alerts)
    mine = Job.objects.filter(target__startswith=f"t{tag}-")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if mine.count() == jobs and not mine.filter(state__in=["queued", "running"]).exists():
            break
        time.sleep(0.1)
    first = min(mine.values_list("queued_at", flat=True))
    last = max(t for t in mine.values_list("finished_at", flat=True) if t is not None)
    done = mine.filter(state="ok").count()
    return done / (last - first).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=60)
    args = parser.parse_args()

    url = os.environ.get("AUTOHEAL_BENCH_DATABASE_URL", DEFAULT_DB)
    # The command jobs run `true`: the central and the agents (which inherit this) must allow it.
    os.environ.setdefault("AUTOHEAL_COMMAND_ALLOW", shutil.which("true") or "/usr/bin/true")
    db.recreate_database(url)
    env = {**os.environ, "DATABASE_URL": url}
    db.migrate(env)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoheal_site.settings")
    import django

    django.setup()
    import docker

    from fleet.tests.harness import DockerHosts, FleetAgents, FleetCentral
    from fleet.tokens import agent_token_create

    source = docker.DockerClient(base_url=os.environ["AUTOHEAL_TEST_DOCKER_HOST"], timeout=60)
    workdir = Path(tempfile.mkdtemp(prefix="autoheal-fleet-bench-"))
    hosts = DockerHosts(HOSTS)
    central = FleetCentral(database_url=url, workdir=workdir, env=CENTRAL_ENV)
    agents = FleetAgents(central=central, hosts=hosts, workdir=workdir)
    try:
        hosts.start(source)
        central.start()
        _policies()
        for name in HOSTS:
            agents.tokens[name] = agent_token_create(host=name, actor="bench").token
            agents.start(name)
        time.sleep(2)
        heal = heal_trials(hosts, args.trials)
        handover = handover_trials(central, args.trials * 2)
        # The same job for the central worker (no host): the local mode's figure in the same run.
        local = handover_trials(central, args.trials * 2, alertname="BenchLocal", host="")
        one = throughput(central, args.jobs, ["A"])
        three = throughput(central, args.jobs, HOSTS)
        load = os.getloadavg()
        print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; logs in {workdir}")
        print(f"heal through an agent (daemon unhealthy event -> restart event): {_summary(heal)}")
        print(f"central job queued -> agent action_started: {_summary(handover)}")
        print(f"the same, local mode (central worker): {_summary(local)}")
        print(f"throughput, {args.jobs} command jobs: one agent {one:.1f} jobs/s; three agents {three:.1f} jobs/s")
    finally:
        agents.stop_all()
        central.stop()
        hosts.stop()
        source.close()


if __name__ == "__main__":
    main()
