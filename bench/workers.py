"""Worker throughput: one worker against three, on the same bursts.

Two measurements, each for one worker and then for three:

- ``burst``: the historical figure. Alerts POSTed for a few seconds while the workers run; jobs
  finished per second from the burst's start until the queue is empty. When the web process
  cannot feed the workers fast enough this is capped by ingest, so it understates the workers.
- ``backlog``: a fixed number of queued log_only jobs committed at once (as after an outage), and
  the time until every one is terminal. This is the workers alone.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

from bench.context import Context
from bench.cpu import CpuSampler
from bench.procs import Started, start_manage
from bench.report import Row


def _unfinished(prefix: str) -> int:
    from remediation.models import Job

    return Job.objects.filter(alert__fingerprint__startswith=prefix, state__in=["queued", "running"]).count()


def queue_backlog(count: int) -> str:
    """Commit ``count`` queued log_only jobs (and their incidents) in one transaction; wake workers."""
    from django.db import transaction
    from django.utils import timezone

    from remediation import wakeup
    from remediation.models import Alert, Job, Policy

    policy = Policy.objects.get(name="bench-log")
    prefix = "bl" + secrets.token_hex(4)
    now = timezone.now()
    with transaction.atomic():
        alerts = Alert.objects.bulk_create(
            [
                Alert(
                    fingerprint=f"{prefix}{n:06x}",
                    starts_at=now,
                    alertname="BenchLog",
                    labels={"alertname": "BenchLog", "container": f"bench-{prefix}-{n}"},
                    received_at=now,
                    last_received_at=now,
                )
                for n in range(count)
            ]
        )
        Job.objects.bulk_create(
            [
                Job(
                    policy=policy,
                    policy_name=policy.name,
                    alert=alert,
                    action=policy.action,
                    target=alert.labels["container"],
                    params={},
                    queued_at=now,
                    not_before=now,
                )
                for alert in alerts
            ]
        )
        transaction.on_commit(wakeup.notify_jobs)
    return prefix


def drain_backlog(count: int, timeout: float) -> tuple[float, int, CpuSampler]:
    """Seconds until a fresh backlog of ``count`` jobs is all terminal, how many were left, and
    where the CPU went meanwhile (from the commit of the backlog, not its making)."""
    prefix = queue_backlog(count)
    with CpuSampler() as cpu:
        t0 = time.monotonic()
        deadline = t0 + timeout
        left = count
        while time.monotonic() < deadline:
            left = _unfinished(prefix)
            if left == 0:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
    return elapsed, left, cpu


def start_extra_workers(ctx: Context, env: dict[str, str], count: int) -> list[Started]:
    """Start ``count`` more workers and wait until each says it started (bounded)."""
    workers = [
        start_manage(
            f"worker-{n + 2}",
            ["autoheal_worker", "--name", f"bench-worker-{n + 2}"],
            dict(env, AUTOHEAL_LOG_LEVEL="INFO"),
            ctx.logdir,
        )
        for n in range(count)
    ]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if all(_started(w.log) for w in workers):
            break
        time.sleep(0.2)
    return workers


def _started(log: Path | None) -> bool:
    return log is not None and log.exists() and " started (wake-up" in log.read_text(errors="replace")


def _cpu(sampler: CpuSampler, jobs: int) -> str:
    """Where the CPU went while a backlog drained, and how busy the machine was."""
    return sampler.split.summary(jobs, "job") if sampler.split else "CPU not measured"


def compare_backlog(ctx: Context, worker_env: dict[str, str], burst: Callable[[str], float | None]) -> None:
    """With the one worker already running: backlog and burst with one, then with three."""
    count = 300 if ctx.quick else 6000
    timeout = 60 if ctx.quick else 240
    one_s, one_left, one_cpu = drain_backlog(count, timeout)
    one_rate = (count - one_left) / one_s if one_s else None
    extra = start_extra_workers(ctx, worker_env, 2)
    try:
        if not all(w.alive() for w in extra):
            ctx.note("workers: an extra worker did not start; three-worker figures not measured")
            return
        three_burst = burst("three workers: log_only jobs finished per second (burst)")
        three_s, three_left, three_cpu = drain_backlog(count, timeout)
        three_rate = (count - three_left) / three_s if three_s else None
    finally:
        for worker in extra:
            worker.stop()
    ctx.add(
        Row(
            "worker",
            "one worker: queued backlog of log_only jobs finished per second",
            one_rate,
            "jobs/s",
            target=">= 300 jobs/s",
            met=one_rate is not None and one_rate >= 300 and one_left == 0,
            note=f"{count} jobs in {one_s:.1f} s; {one_left} left; {_cpu(one_cpu, count)}",
        )
    )
    ratio_met = one_rate is not None and three_rate is not None and three_rate >= 2.5 * one_rate
    ctx.add(
        Row(
            "worker",
            "three workers: queued backlog of log_only jobs finished per second",
            three_rate,
            "jobs/s",
            baseline="one worker, same backlog",
            baseline_value=one_rate,
            target=">= 2.5 x one worker",
            met=ratio_met and three_left == 0,
            note=f"{count} jobs in {three_s:.1f} s; {three_left} left; burst figure {three_burst or 0:.1f} jobs/s; "
            f"{_cpu(three_cpu, count)}",
        )
    )
