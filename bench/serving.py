"""The client's ceiling and the serving question: the same loads under each server configuration."""

from __future__ import annotations

import subprocess
import sys
import time

from bench import db
from bench.context import NOOP_HEADERS, WEBHOOK_HEADERS, Context, post
from bench.load import wrk
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
    """For each configuration: the no-op DRF view and the webhook (all-new alerts), RSS."""
    kinds = ["daphne-x1", "gunicorn-gthread-2x4"] if ctx.quick else list(SERVERS)
    template = batch_template()
    for kind in kinds:
        db.truncate_state()
        _bench_policy()
        try:
            started = start_server(kind, ctx.env, ctx.logdir)
        except RuntimeError as exc:
            ctx.note(f"{kind} did not start: {exc}")
            continue
        try:
            post(started.port or 0, "/bench/noop", "{}", NOOP_HEADERS)
            rest = started.rss_mb()
            with RssSampler(started) as noop_rss:
                noop = wrk(
                    f"http://127.0.0.1:{started.port}/bench/noop",
                    headers=NOOP_HEADERS,
                    template=template,
                    seconds=ctx.seconds,
                    max_requests=200_000,
                )
            ctx.add(
                Row(
                    f"serving {kind}",
                    "no-op DRF view (POST, 16 conn)",
                    noop.ok_per_s,
                    "req/s",
                    baseline="client ceiling",
                    baseline_value=ctx.facts.get("client_ceiling_rps"),
                    note=f"p50 {noop.p50_ms:.1f} / p99 {noop.p99_ms:.1f} ms, {noop.bad + noop.socket_errors} errors",
                )
            )
            if not webhook_available(started.port or 0):
                ctx.note(f"{kind}: POST /alert is not there yet; webhook not measured")
                ctx.add(Row(f"serving {kind}", "RSS at rest / peak", rest, "MiB", note=f"peak {noop_rss.peak:.0f}"))
                continue
            with RssSampler(started) as hook_rss:
                hook = wrk(
                    f"http://127.0.0.1:{started.port}/alert",
                    headers=WEBHOOK_HEADERS,
                    template=template,
                    seconds=ctx.seconds,
                    max_requests=100_000,
                )
            ctx.add(
                Row(
                    f"serving {kind}",
                    "webhook, 10 new alerts per POST",
                    hook.ok_per_s,
                    "req/s",
                    baseline="no-op same server",
                    baseline_value=noop.ok_per_s,
                    note=f"p50 {hook.p50_ms:.1f} / p99 {hook.p99_ms:.1f} ms, {hook.bad + hook.socket_errors} errors",
                )
            )
            peak = max(noop_rss.peak, hook_rss.peak)
            ctx.add(Row(f"serving {kind}", "RSS at rest / peak", rest, "MiB", note=f"peak {peak:.0f}"))
        finally:
            started.stop()


def _bench_policy() -> None:
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
