"""Alert -> action started, with a worker running: measured from outside the service.

Each alert is POSTed alone and its send time kept; the worker's ``action_started`` (log_only) or
``action_dry_run`` (dry-run policy) audit event carries the time the action began. Both clocks are
this machine's, so the difference is the end-to-end latency a user would see. Alerts are spaced
so the figure is pipeline latency, not queueing; a burst afterwards measures worker throughput and
memory under load.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from datetime import datetime

from bench import db
from bench.context import WEBHOOK_HEADERS, Context, post
from bench.load import wrk
from bench.payloads import batch_template, single_alert
from bench.procs import RssSampler, start_manage, start_server
from bench.report import Row
from bench.serving import webhook_available
from bench.workers import compare_backlog

STARTED_KINDS = ("action_started", "action_dry_run")


def _policies() -> None:
    from remediation.models import Action, Policy

    common = {"cooldown_seconds": 0, "max_actions_per_hour": 1_000_000, "target": "{{ labels.container }}"}
    Policy.objects.update_or_create(
        name="bench-log",
        defaults={"matchers": ['alertname=~"BenchLog|ContainerOOMKilled"'], "action": Action.LOG_ONLY, **common},
    )
    Policy.objects.update_or_create(
        name="bench-dry",
        defaults={
            "matchers": ['alertname="BenchDryRun"'],
            "action": Action.RESTART_CONTAINER,
            "dry_run": True,
            **common,
        },
    )


def _first_action_times(fingerprints: list[str]) -> dict[str, datetime]:
    from audit.models import AuditEvent

    rows = AuditEvent.objects.filter(fingerprint__in=fingerprints, kind__in=STARTED_KINDS).values_list(
        "fingerprint", "ts"
    )
    first: dict[str, datetime] = {}
    for fp, ts in rows:
        if fp not in first or ts < first[fp]:
            first[fp] = ts
    return first


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _trials(
    port: int,
    alertname: str,
    count: int,
    container: str | None = None,
    answered: list[float] | None = None,
    inside: list[float] | None = None,
) -> tuple[list[float], int]:
    """POST ``count`` single alerts 50 ms apart; latencies (ms) from send to the action's event."""
    sent: dict[str, float] = {}
    prefix = secrets.token_hex(4)
    for n in range(count):
        fp = f"{prefix}{n:08x}"
        body = single_alert(fp, container or f"bench-{fp}", alertname)
        sent[fp] = time.time()
        status, answer = post(port, "/alert", body)
        if answered is not None:
            answered.append((time.time() - sent[fp]) * 1000)
        if status != 202:
            raise RuntimeError(f"POST /alert answered {status}: {answer}")
        time.sleep(0.05)
    deadline = time.monotonic() + 15
    found: dict[str, datetime] = {}
    while time.monotonic() < deadline:
        found = _first_action_times(list(sent))
        if len(found) == len(sent):
            break
        time.sleep(0.25)
    latencies = [(found[fp].timestamp() - t0) * 1000 for fp, t0 in sent.items() if fp in found]
    if inside is not None:
        from remediation.models import Job

        for received, started in Job.objects.filter(
            alert__fingerprint__in=list(sent), started_at__isnull=False
        ).values_list("alert__received_at", "started_at"):
            inside.append((started - received).total_seconds() * 1000)
    return latencies, len(sent) - len(found)


# Unmeasured deliveries after the worker's first job, so each web process has served some.
WARM_UP = 8


def latency(ctx: Context) -> None:
    db.truncate_state()
    _policies()
    web = start_server(ctx.server, ctx.env, ctx.logdir)
    worker = None
    try:
        port = web.port or 0
        if not webhook_available(port):
            ctx.note("latency: POST /alert is not there yet; not measured")
            return
        docker_host = ctx.env.get("AUTOHEAL_TEST_DOCKER_HOST", "")
        worker_env = dict(ctx.env, DOCKER_HOST=docker_host, AUTOHEAL_SELF_CONTAINER="")
        worker = start_manage("worker", ["autoheal_worker"], worker_env, ctx.logdir)
        # Ready means: it has run a job. Importing Django on a busy machine takes seconds, and
        # alerts sent before that would measure start-up, not the pipeline.
        _, missing = _trials(port, "BenchLog", 1)
        if missing or not worker.alive():
            ctx.note("latency: the worker ran no job within 15 s; see " + str(worker.log))
            return
        # Warm every web process too (gunicorn-gthread-2x4 is two processes sharing one socket):
        # a process's first delivery opens its pooled connection and its wake-up sender's, and
        # prepares its statements. That is start-up, once per process, not the pipeline.
        _trials(port, "BenchLog", WARM_UP)
        worker_rest = worker.rss_mb()
        count = 20 if ctx.quick else 100
        target = _dry_run_target(ctx, docker_host)
        modes = [("BenchLog", "log_only", None)]
        if target:
            modes.append(("BenchDryRun", "dry-run", target))
        else:
            ctx.note("latency: no private dockerd, so the dry-run mode (a restart_container policy) is not measured")
        for alertname, mode, container in modes:
            answered: list[float] = []
            inside: list[float] = []
            values, missing = _trials(port, alertname, count, container, answered, inside)
            if not values:
                ctx.add(Row("alert -> action", f"{mode}: no action seen", None, "", note=f"{missing} missing"))
                continue
            p50, p99 = _pct(values, 0.5), _pct(values, 0.99)
            ctx.add(
                Row(
                    "alert -> action",
                    f"{mode}: POST sent -> {'action_started' if mode == 'log_only' else 'action_dry_run'} p50",
                    p50,
                    "ms",
                    baseline="POST answered 202 (stored) p50",
                    baseline_value=_pct(answered, 0.5),
                    target="p50 < 20 ms, p99 < 100 ms",
                    met=p50 < 20 and p99 < 100 and missing == 0,
                    note=f"p99 {p99:.1f}, max {max(values):.1f} ms, {len(values)} alerts, {missing} without action",
                )
            )
            if inside:
                ctx.add(
                    Row(
                        "alert -> action",
                        f"{mode}: of which alert stored (received_at) -> job claimed (started_at) p50",
                        _pct(inside, 0.5),
                        "ms",
                        note=f"p99 {_pct(inside, 0.99):.1f} ms: commit, wake-up, claim",
                    )
                )
        _worker_burst(ctx, port, worker, worker_rest, worker_env)
    finally:
        if worker is not None:
            worker.stop()
        web.stop()
        _remove_target(ctx)


_TARGET = "bench-dry-target"


def _dry_run_target(ctx: Context, docker_host: str) -> str | None:
    """A real opted-in container: a dry run still checks that its target exists and may be touched."""
    if not docker_host:
        return None
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(_TARGET).remove(force=True)
        client.containers.run(
            ctx.env.get("AUTOHEAL_TEST_IMAGE", "autoheal-test-busybox:latest"),
            ["sleep", "100000"],
            name=_TARGET,
            labels={"autoheal.enable": "true"},
            detach=True,
            init=True,
            network_mode="none",
        )
    finally:
        client.close()
    return _TARGET


def _remove_target(ctx: Context) -> None:
    docker_host = ctx.env.get("AUTOHEAL_TEST_DOCKER_HOST", "")
    if not docker_host:
        return
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(_TARGET).remove(force=True)
    finally:
        client.close()


def _burst(ctx: Context, port: int, figure: str, one_worker: float | None = None) -> float | None:
    """POST a burst of log_only alerts while the workers run; jobs finished per second until the
    queue is empty (capped by ingest when the web process cannot feed the workers)."""
    from audit.models import AuditEvent
    from remediation.models import Job

    before_ok = AuditEvent.objects.filter(kind="action_ok").count()
    burst = wrk(
        f"http://127.0.0.1:{port}/alert",
        headers=WEBHOOK_HEADERS,
        template=batch_template(),
        connections=4,
        seconds=2 if ctx.quick else 5,
        max_requests=200 if ctx.quick else 1000,
    )
    queued_at_end = Job.objects.filter(state=Job.State.QUEUED).count()
    t0 = time.monotonic()
    deadline = t0 + (30 if ctx.quick else 90)
    while time.monotonic() < deadline and Job.objects.filter(state__in=["queued", "running"]).exists():
        time.sleep(0.25)
    drained = time.monotonic() - t0
    # Events are chained by the sealer shortly after their commit: wait for the count to settle.
    _settle_audit()
    done = AuditEvent.objects.filter(kind="action_ok").count() - before_ok
    left = Job.objects.filter(state__in=["queued", "running"]).count()
    elapsed = burst.seconds + drained
    rate = done / elapsed if elapsed else None
    three = one_worker is not None
    ctx.add(
        Row(
            "worker",
            figure,
            rate,
            "jobs/s",
            baseline="one worker (burst)" if three else "",
            baseline_value=one_worker,
            target=">= 2.5 x one worker" if three else ">= 300 jobs/s",
            met=(rate is not None and rate >= 2.5 * one_worker) if three and one_worker else (rate or 0) >= 300,
            note=f"{done} done in {elapsed:.1f} s; {queued_at_end} queued when the burst ended; {left} left",
        )
    )
    return rate


def _settle_audit(timeout: float = 30.0) -> None:
    from audit.models import AuditPending

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and AuditPending.objects.exists():
        time.sleep(0.1)


def _worker_burst(ctx: Context, port: int, worker, worker_rest: float, worker_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Bursts of log_only jobs: how fast one worker, then three, drain them; memory meanwhile."""
    with RssSampler(worker) as rss:
        one = _burst(ctx, port, "one worker: log_only jobs finished per second (burst)")
        compare_backlog(ctx, worker_env, lambda figure: _burst(ctx, port, figure, one_worker=one))
    ctx.add(
        Row(
            "worker",
            "worker RSS at rest / under load",
            worker_rest,
            "MiB",
            target="< 150 MiB",
            met=rss.peak < 150,
            note=f"under load {rss.peak:.0f}",
        )
    )
