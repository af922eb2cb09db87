"""A storm: 20,000 alerts in 2,000 deliveries over 10 s, every one matching a restart policy.

What a switch or node failure looks like to Autoheal: a fleet fires at once. On the private dockerd
50 opted-in containers stand in for the fleet; one ``restart_container`` policy matches every
alert; the circuit breaker and budgets are the defaults. Measured: ingest latency during the storm,
the time until every job is terminal, how many actions ran (never more than the breaker allows),
and whether the audit trail verifies afterwards. Bounded: 2,000 requests, a deadline for the
drain, and every container removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from bench import db
from bench.context import Context, post
from bench.procs import Started, start_manage, start_server
from bench.report import Row
from bench.serving import webhook_available

CONTAINERS = 50
DELIVERIES = 2000
PER_DELIVERY = 10
SPREAD_SECONDS = 10.0
WORKERS = 3
CONNECTIONS = 16
ALERTNAME = "NodeStormContainerDown"


def _containers(ctx: Context, create: bool) -> list[str]:
    import docker

    names = [f"bench-storm-{n:02d}" for n in range(CONTAINERS)]
    client = docker.DockerClient(base_url=ctx.env["AUTOHEAL_TEST_DOCKER_HOST"], timeout=60)
    image = ctx.env.get("AUTOHEAL_TEST_IMAGE", "autoheal-test-busybox:latest")

    def remove(name: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name).remove(force=True)

    def run(name: str) -> None:
        remove(name)
        client.containers.run(
            image,
            ["sleep", "100000"],
            name=name,
            labels={"autoheal.enable": "true"},
            detach=True,
            init=True,  # a restart then takes about 0.1 s instead of the 10 s stop timeout
            network_mode="none",
        )

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(run if create else remove, names))
    finally:
        client.close()
    return names


def _bodies(names: list[str]) -> list[str]:
    prefix = secrets.token_hex(3)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    bodies = []
    for d in range(DELIVERIES):
        alerts = []
        for i in range(PER_DELIVERY):
            n = d * PER_DELIVERY + i
            container = names[n % len(names)]
            labels = {"alertname": ALERTNAME, "container": container, "node": f"node-{n % 7}", "severity": "critical"}
            alerts.append(
                {
                    "status": "firing",
                    "labels": labels,
                    "annotations": {"summary": f"{container} is down"},
                    "startsAt": now,
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://127.0.0.1:9090/graph",
                    "fingerprint": f"{prefix}{n:010x}",
                }
            )
        bodies.append(
            json.dumps(
                {
                    "version": "4",
                    "groupKey": f'{{}}:{{alertname="{ALERTNAME}"}}',
                    "truncatedAlerts": 0,
                    "status": "firing",
                    "receiver": "autoheal",
                    "groupLabels": {"alertname": ALERTNAME},
                    "commonLabels": {"alertname": ALERTNAME, "severity": "critical"},
                    "commonAnnotations": {},
                    "externalURL": "http://127.0.0.1:9093",
                    "alerts": alerts,
                },
                separators=(",", ":"),
            )
        )
    return bodies


def _send(port: int, bodies: list[str]) -> tuple[list[float], int, float]:
    """POST every body, paced evenly over SPREAD_SECONDS on CONNECTIONS threads; latencies (ms)."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    t0 = time.monotonic() + 0.5
    step = SPREAD_SECONDS / len(bodies)

    def one(index: int) -> None:
        nonlocal failures
        delay = t0 + index * step - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        started = time.monotonic()
        try:
            status, _ = post(port, "/alert", bodies[index])
        except OSError:
            status = 0
        elapsed = (time.monotonic() - started) * 1000
        with lock:
            latencies.append(elapsed)
            if status != 202:
                failures += 1

    with ThreadPoolExecutor(max_workers=CONNECTIONS) as pool:
        list(pool.map(one, range(len(bodies))))
    return latencies, failures, time.monotonic() - t0


def _policy() -> None:
    from remediation.models import Action, Policy

    Policy.objects.update_or_create(
        name="bench-storm",
        defaults={
            "matchers": [f'alertname="{ALERTNAME}"'],
            "action": Action.RESTART_CONTAINER,
            "target": "{{ labels.container }}",
        },
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def storm(ctx: Context) -> None:
    if not ctx.env.get("AUTOHEAL_TEST_DOCKER_HOST"):
        ctx.note("storm: no private dockerd (scripts/services.sh up); not measured")
        return
    from django.conf import settings

    from audit.models import AuditEvent, AuditPending
    from audit.selectors import chain_verify
    from remediation.models import Job

    db.truncate_state()
    _policy()
    names = _containers(ctx, create=True)
    web = start_server(ctx.server, ctx.env, ctx.logdir)
    workers: list[Started] = []
    try:
        port = web.port or 0
        if not webhook_available(port):
            ctx.note("storm: POST /alert is not there; not measured")
            return
        worker_env = dict(ctx.env, DOCKER_HOST=ctx.env["AUTOHEAL_TEST_DOCKER_HOST"], AUTOHEAL_SELF_CONTAINER="")
        workers = [
            start_manage(f"storm-worker-{n}", ["autoheal_worker", "--name", f"storm-{n}"], worker_env, ctx.logdir)
            for n in range(WORKERS)
        ]
        bodies = _bodies(names)
        t_start = time.monotonic()
        latencies, failures, sent_in = _send(port, bodies)
        deadline = t_start + (120 if ctx.quick else 600)
        while time.monotonic() < deadline and Job.objects.filter(state__in=["queued", "running"]).exists():
            time.sleep(0.5)
        terminal_after = time.monotonic() - t_start
        left = Job.objects.filter(state__in=["queued", "running"]).count()
        settle = time.monotonic() + 60
        while time.monotonic() < settle and AuditPending.objects.exists():
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.stop()
        web.stop()
        _containers(ctx, create=False)

    jobs = Job.objects.count()
    started = AuditEvent.objects.filter(kind="action_started", policy="bench-storm").count()
    outcomes = AuditEvent.objects.filter(kind__in=["action_ok", "action_fail"], policy="bench-storm").count()
    circuit = AuditEvent.objects.filter(kind="circuit_open").count()
    limit = settings.AUTOHEAL_CIRCUIT_MAX_ACTIONS
    report = chain_verify()
    pending = AuditPending.objects.count()
    label = f"storm ({DELIVERIES} deliveries x {PER_DELIVERY} alerts, {CONTAINERS} containers, {WORKERS} workers)"
    ctx.add(
        Row(
            label,
            "ingest p99 during the storm",
            _pct(latencies, 0.99),
            "ms",
            note=f"p50 {_pct(latencies, 0.5):.0f} ms; {len(latencies)} POSTs in {sent_in:.1f} s "
            f"(paced over {SPREAD_SECONDS:.0f} s); {failures} not answered 202",
        )
    )
    ctx.add(
        Row(
            label,
            "time until every job is terminal",
            terminal_after if left == 0 else None,
            "s",
            note=f"{jobs} jobs; {left} still queued or running at the deadline",
        )
    )
    ctx.add(
        Row(
            label,
            "actions that ran (action_started)",
            started,
            "actions",
            target=f"<= circuit breaker limit ({limit})",
            met=started <= limit,
            note=f"{outcomes} finished ok or failed; circuit_open events {circuit}",
        )
    )
    ctx.add(
        Row(
            label,
            "audit_verify after the storm",
            report.checked,
            "events",
            target="intact, nothing pending",
            met=report.ok and pending == 0,
            note=("intact" if report.ok else f"NOT intact: {report.problems[:3]}") + f"; {pending} pending",
        )
    )
