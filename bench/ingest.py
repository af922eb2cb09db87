"""Webhook ingest (all new, all duplicates) and audit write latency under that load."""

from __future__ import annotations

import secrets
import statistics
import threading
import time
from collections import Counter

from bench import db
from bench.context import NOOP_HEADERS, WEBHOOK_HEADERS, Context, get, post
from bench.cpu import CpuSampler
from bench.load import LoadResult, wrk
from bench.payloads import batch_template, fixed_bodies
from bench.procs import RssSampler, Started, start_server
from bench.report import Row
from bench.serving import bench_policy, webhook_available

BATCH = 10


def _alert_count() -> int:
    from remediation.models import Alert

    return Alert.objects.count()


def _noop(ctx: Context, started: Started, template: str) -> LoadResult:
    with CpuSampler(started.pids) as cpu:
        result = wrk(
            f"http://127.0.0.1:{started.port}/bench/noop",
            headers=NOOP_HEADERS,
            template=template,
            seconds=ctx.seconds,
            max_requests=200_000,
        )
    _cpu_row(ctx, "no-op DRF view", cpu, result.ok, "request")
    return result


def _cpu_row(ctx: Context, what: str, cpu: CpuSampler, count: float, unit: str, extra: str = "") -> None:
    """CPU of every process per request during a load, and how many cores were busy."""
    if cpu.split is None or not count:
        return
    per = cpu.split.per(count)
    ctx.add(
        Row(
            f"ingest ({ctx.server})",
            f"{what}: CPU per {unit}, all processes",
            sum(per.values()),
            "ms",
            note=cpu.split.summary(count, unit) + (f"; {extra}" if extra else ""),
        )
    )


def ingest(ctx: Context) -> None:
    """16 connections of 10-alert batches: alerts/s durably accepted (rows counted after)."""
    db.truncate_state()
    bench_policy()
    template = batch_template(BATCH)
    started = start_server(ctx.server, ctx.env, ctx.logdir)
    label = f"ingest ({ctx.server})"
    try:
        port = started.port or 0
        post(port, "/bench/noop", "{}", NOOP_HEADERS)
        rest_total, rest_one = started.rss_mb(), started.largest_process_mb()
        noop = _noop(ctx, started, template)
        ctx.add(
            Row(
                label,
                "no-op DRF view",
                noop.ok_per_s,
                "req/s",
                note=f"p50 {noop.p50_ms:.1f} / p99 {noop.p99_ms:.1f} ms",
            )
        )
        if not webhook_available(port):
            ctx.note("ingest: POST /alert is not there yet; not measured")
            return
        db.truncate_state()
        bench_policy()

        before = _alert_count()
        with CpuSampler(started.pids) as new_cpu:
            with RssSampler(started) as rss, WaitSampler() as waits:
                new = wrk(
                    f"http://127.0.0.1:{port}/alert",
                    headers=WEBHOOK_HEADERS,
                    template=template,
                    seconds=ctx.seconds,
                    max_requests=100_000,
                )
            # The deliveries' audit events are chained after the answers: their sealing is part
            # of what the deliveries cost, so the CPU window closes when nothing is pending.
            sealing_lag = db.until_sealed(timeout=60)
        stored = _alert_count() - before
        accepted = new.accepted
        # Requests still in flight when wrk stops are stored but never counted as answered, so
        # the rate counts the answered alerts and the check below proves each one is in the table.
        rate = min(accepted, stored) / new.seconds if new.seconds else 0.0
        ctx.add(
            Row(
                label,
                "all new: alerts/s durably stored (rows counted after)",
                rate,
                "alerts/s",
                baseline="no-op x 10",
                baseline_value=noop.ok_per_s * BATCH,
                target=">= 5,000 and ratio >= 0.25",
                met=rate >= 5000 and rate >= 0.25 * noop.ok_per_s * BATCH,
                note=f"{new.ok_per_s:.0f} req/s",
            )
        )
        ctx.add(
            Row(
                label,
                "all new: latency p50 / p99",
                new.p50_ms,
                "ms",
                baseline="no-op p50",
                baseline_value=noop.p50_ms,
                note=f"p99 {new.p99_ms:.1f} ms (no-op {noop.p99_ms:.1f})",
            )
        )
        lost = max(0, accepted - stored)
        ctx.add(
            Row(
                label,
                "all new: accepted (202) but not stored",
                lost,
                "alerts",
                target="0",
                met=lost == 0,
                note=f"{accepted} accepted, {stored} rows, non-2xx {new.bad}, socket errors {new.socket_errors}",
            )
        )

        _cpu_row(ctx, "all new", new_cpu, new.ok, "delivery", f"sealing finished {sealing_lag:.1f} s after the load")
        ctx.add(
            Row(
                label,
                "all new: PostgreSQL sessions of the bench database, by what they were doing",
                waits.mean("advisory"),
                "waiting on the audit chain lock",
                note=waits.summary(),
            )
        )

        bodies = fixed_bodies(template, 100, secrets.token_hex(2))
        for body in bodies:
            post(port, "/alert", body)
        known = _alert_count()
        with RssSampler(started) as rss_dup, CpuSampler(started.pids) as dup_cpu:
            dup = wrk(
                f"http://127.0.0.1:{port}/alert",
                headers=WEBHOOK_HEADERS,
                bodies=bodies,
                seconds=ctx.seconds,
                max_requests=100_000,
            )
        extra = _alert_count() - known
        _cpu_row(ctx, "all duplicates", dup_cpu, dup.ok, "delivery")
        dup_rate = dup.ok * BATCH / dup.seconds if dup.seconds else 0.0
        ctx.add(
            Row(
                label,
                "all duplicates: alerts/s acknowledged",
                dup_rate,
                "alerts/s",
                baseline="no-op x 10",
                baseline_value=noop.ok_per_s * BATCH,
                target=">= 5,000 and ratio >= 0.25",
                met=dup_rate >= 5000 and dup_rate >= 0.25 * noop.ok_per_s * BATCH,
                note=f"p50 {dup.p50_ms:.1f} / p99 {dup.p99_ms:.1f} ms; {extra} new rows (must be 0)",
            )
        )
        peak_total = max(rss.peak, rss_dup.peak)
        peak_one = max(rss.peak_process, rss_dup.peak_process)
        ctx.add(
            Row(
                label,
                "web RSS, largest process at rest / under load",
                rest_one,
                "MiB",
                target="< 200 MiB",
                met=peak_one < 200,
                note=f"under load {peak_one:.0f}; all processes {rest_total:.0f} -> {peak_total:.0f}",
            )
        )
        _metrics_histogram(ctx, port)
    finally:
        started.stop()


class WaitSampler:
    """Samples pg_stat_activity of the benchmark database every 50 ms during a load.

    Shows where the sessions serving the load spend their time: running, idle in a transaction,
    or waiting (``Lock/advisory`` is the audit trail's chain lock, which every audit write takes).
    """

    def __init__(self) -> None:
        self.samples: list[Counter[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(db.db_url(), autocommit=True) as conn:
            name = db.db_url().rsplit("/", 1)[1]
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid() AND state <> 'idle'",
                    [name],
                ).fetchall()
                sample: Counter[str] = Counter()
                for state, wtype, wevent in rows:
                    if wtype == "Lock" and wevent == "advisory":
                        sample["advisory"] += 1
                    elif wtype in ("Lock", "LWLock", "IO", "IPC"):
                        sample[f"{wtype}:{wevent}"] += 1
                    else:
                        sample[state or "unknown"] += 1
                self.samples.append(sample)
                self._stop.wait(0.05)

    def mean(self, key: str) -> float:
        return sum(s[key] for s in self.samples) / len(self.samples) if self.samples else 0.0

    def summary(self) -> str:
        keys: Counter[str] = Counter()
        for sample in self.samples:
            keys.update(sample)
        n = len(self.samples) or 1
        return "mean sessions: " + ", ".join(f"{k} {v / n:.2f}" for k, v in keys.most_common(6))

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _metrics_histogram(ctx: Context, port: int) -> None:
    """autoheal_audit_write_seconds as the web process exposes it, if it does yet."""
    status, text = get(port, "/metrics")
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines() if status == 200 else []:
        if line.startswith("autoheal_audit_write_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets:
        ctx.note("autoheal_audit_write_seconds is not exposed yet on /metrics")
        return
    total = buckets[-1][1]
    p95 = next((le for le, count in buckets if count >= 0.95 * total), float("inf"))
    ctx.add(
        Row(
            "audit write",
            "autoheal_audit_write_seconds p95 (upper bucket bound, from /metrics)",
            p95 * 1000,
            "ms",
            note=f"{total:.0f} observations",
        )
    )


def _probe(stop: threading.Event, samples: list[float], limit: int) -> None:
    """Write one audit event at a time (its own transaction, commit included) and time it."""
    from django.db import close_old_connections

    from audit.services import audit_record

    try:
        while not stop.is_set() and len(samples) < limit:
            t0 = time.perf_counter()
            audit_record(kind="no_policy", alertname="BenchProbe", message="benchmark probe write")
            samples.append(time.perf_counter() - t0)
            stop.wait(0.005)
    finally:
        close_old_connections()


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def audit_write(ctx: Context) -> None:
    """audit_record latency (commit included) alone, then while 16 connections ingest alerts."""
    db.truncate_state()
    bench_policy()
    limit = 2000 if ctx.quick else 10000
    idle: list[float] = []
    stop = threading.Event()
    thread = threading.Thread(target=_probe, args=(stop, idle, limit))
    thread.start()
    time.sleep(ctx.seconds / 2)
    stop.set()
    thread.join()

    started = start_server(ctx.server, ctx.env, ctx.logdir)
    try:
        port = started.port or 0
        if not webhook_available(port):
            ctx.note("audit write under load: POST /alert is not there yet; measured without load only")
            loaded: list[float] = []
        else:
            loaded = []
            stop = threading.Event()
            thread = threading.Thread(target=_probe, args=(stop, loaded, limit))
            thread.start()
            try:
                wrk(
                    f"http://127.0.0.1:{port}/alert",
                    headers=WEBHOOK_HEADERS,
                    template=batch_template(BATCH),
                    seconds=ctx.seconds,
                    max_requests=100_000,
                )
            finally:
                stop.set()
                thread.join()
    finally:
        started.stop()
    ctx.add(
        Row(
            "audit write",
            "audit_record p50, no load",
            _pct(idle, 0.5),
            "ms",
            note=f"p95 {_pct(idle, 0.95):.2f} ms, {len(idle)} writes",
        )
    )
    if loaded:
        p95 = _pct(loaded, 0.95)
        ctx.add(
            Row(
                "audit write",
                "audit_record p95 under ingest load",
                p95,
                "ms",
                baseline="p95 no load",
                baseline_value=_pct(idle, 0.95),
                target="< 5 ms",
                met=p95 < 5,
                note=f"p50 {_pct(loaded, 0.5):.2f}, max {max(loaded) * 1000:.1f} ms, {len(loaded)} writes; "
                f"mean {statistics.mean(loaded) * 1000:.2f}",
            )
        )
