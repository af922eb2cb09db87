"""The client's ceiling and the serving question: the same loads under each server configuration."""

from __future__ import annotations

import subprocess
import sys
import time

from bench import db
from bench.context import NOOP_HEADERS, WEBHOOK_HEADERS, Context, post
from bench.load import LoadResult, wrk
from bench.payloads import batch_template
from bench.procs import ROOT, SERVERS, RssSampler, free_port, start_server
from bench.report import Row


def client_ceiling(ctx: Context) -> None:
    """wrk against a server that does nothing: the most this client can send here."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.trivial_server", str(port)], cwd=ROOT, start_new_session=True)
    try:
        time.sleep(0.5)
        result = wrk(
            f"http://127.0.0.1:{port}/alert",
            headers=WEBHOOK_HEADERS,
            template=batch_template(),
            seconds=ctx.seconds,
            max_requests=2_000_000,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    ctx.facts["client_ceiling_rps"] = result.ok_per_s
    ctx.add(
        Row(
            "client",
            "wrk ceiling: unique 10-alert bodies vs trivial asyncio server",
            result.ok_per_s,
            "req/s",
            note=f"p50 {result.p50_ms:.2f} ms",
        )
    )


def webhook_available(port: int) -> bool:
    """True once POST /alert exists (it answers anything but 404/405 to a real body)."""
    status, _ = post(port, "/alert", batch_template().replace("@@ID@@", "ffffffffffff"))
    return status not in (404, 405)


def serving(ctx: Context) -> None:
    """For each configuration: the no-op DRF view and the webhook (all-new alerts), and RSS.

    All configurations run at once (idle ones cost nothing) and take turns in rounds, so noise
    from other work on the machine lands on all of them alike; each figure is the median of its
    rounds.
    """
    kinds = ["daphne-x1", "gunicorn-gthread-2x4"] if ctx.quick else list(SERVERS)
    rounds = 1 if ctx.quick else 3
    seconds = ctx.seconds if ctx.quick else 4.0
    template = batch_template()
    db.truncate_state()
    bench_policy()
    servers = {}
    try:
        for kind in kinds:
            try:
                servers[kind] = start_server(kind, ctx.env, ctx.logdir)
            except RuntimeError as exc:
                ctx.note(f"{kind} did not start: {exc}")
        rest: dict[str, float] = {}
        for kind, started in servers.items():
            post(started.port or 0, "/bench/noop", "{}", NOOP_HEADERS)
            rest[kind] = started.rss_mb()
        hook_ok = all(webhook_available(s.port or 0) for s in servers.values())
        if not hook_ok:
            ctx.note("serving: POST /alert is not there yet; webhook not measured")
        noop: dict[str, list[LoadResult]] = {k: [] for k in servers}
        hook: dict[str, list[LoadResult]] = {k: [] for k in servers}
        peak: dict[str, float] = dict.fromkeys(servers, 0.0)
        for _ in range(rounds):
            for kind, started in servers.items():
                with RssSampler(started) as rss:
                    noop[kind].append(
                        wrk(
                            f"http://127.0.0.1:{started.port}/bench/noop",
                            headers=NOOP_HEADERS,
                            template=template,
                            seconds=seconds,
                            max_requests=200_000,
                        )
                    )
                    if hook_ok:
                        hook[kind].append(
                            wrk(
                                f"http://127.0.0.1:{started.port}/alert",
                                headers=WEBHOOK_HEADERS,
                                template=template,
                                seconds=seconds,
                                max_requests=100_000,
                            )
                        )
                peak[kind] = max(peak[kind], rss.peak)
        for kind in servers:
            n = _median_run(noop[kind])
            ctx.add(
                Row(
                    f"serving {kind}",
                    f"no-op DRF view (POST, 16 conn), median of {rounds}",
                    n.ok_per_s,
                    "req/s",
                    baseline="client ceiling",
                    baseline_value=ctx.facts.get("client_ceiling_rps"),
                    note=f"p50 {n.p50_ms:.1f} / p99 {n.p99_ms:.1f} ms, {_errors(noop[kind])} errors",
                )
            )
            if hook[kind]:
                h = _median_run(hook[kind])
                ctx.add(
                    Row(
                        f"serving {kind}",
                        f"webhook, 10 new alerts per POST, median of {rounds}",
                        h.ok_per_s,
                        "req/s",
                        baseline="no-op same server",
                        baseline_value=n.ok_per_s,
                        note=f"p50 {h.p50_ms:.1f} / p99 {h.p99_ms:.1f} ms, {_errors(hook[kind])} errors",
                    )
                )
            ctx.add(Row(f"serving {kind}", "RSS at rest / peak", rest[kind], "MiB", note=f"peak {peak[kind]:.0f}"))
    finally:
        for started in servers.values():
            started.stop()


def _median_run(runs: list[LoadResult]) -> LoadResult:
    return sorted(runs, key=lambda r: r.ok_per_s)[len(runs) // 2]


def _errors(runs: list[LoadResult]) -> int:
    return sum(r.bad + r.socket_errors for r in runs)


def bench_policy() -> None:
    """The policy the ingest loads match: a log_only action, so every new alert queues a job."""
    from remediation.models import Action, Policy

    Policy.objects.update_or_create(
        name="bench-log",
        defaults={
            "matchers": ['alertname="ContainerOOMKilled"'],
            "action": Action.LOG_ONLY,
            "target": "{{ labels.container }}",
            "cooldown_seconds": 0,
            "max_actions_per_hour": 1000000,
        },
    )
