"""Where the time of one ``POST /alert`` goes: cProfile over in-process requests, queries counted.

The requests go through Django's full handler and middleware (the test client), in the benchmark
process, against the benchmark database, so the profile has no network and no server in it.
"""

from __future__ import annotations

import cProfile
import io
import itertools
import pstats
import secrets
import time
from collections import Counter
from collections.abc import Callable

from bench import db
from bench.context import Context
from bench.cpu import CpuSampler
from bench.load import ID_MARK
from bench.payloads import batch_template
from bench.procs import BENCH_TOKEN, ROOT
from bench.report import Row
from bench.serving import bench_policy

_OWN = ("remediation", "audit", "accounts", "dashboard", "observability", "operations", "autoheal_site")


def profile(ctx: Context) -> None:
    from django.db import connection
    from django.test import Client

    db.truncate_state()
    bench_policy()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {BENCH_TOKEN}", HTTP_USER_AGENT="Alertmanager/0.25.0")
    noop_client = Client(HTTP_USER_AGENT="Alertmanager/0.25.0")
    template = batch_template()
    prefix = secrets.token_hex(2)
    count = 100 if ctx.quick else 300

    def body(n: int) -> str:
        return template.replace(ID_MARK, f"{prefix}{n:08x}")

    first = client.post("/alert", data=body(0), content_type="application/json")
    if first.status_code == 404:
        ctx.note("profile: POST /alert is not there yet")
        return
    new_queries: list[tuple[str, float]] = []
    dup_queries: list[tuple[str, float]] = []
    # An execute wrapper, not CaptureQueriesContext: the request_started signal empties the
    # connection's query log at the start of every request.
    with connection.execute_wrapper(_Recorder(new_queries)):
        client.post("/alert", data=body(1), content_type="application/json")
    with connection.execute_wrapper(_Recorder(dup_queries)):
        client.post("/alert", data=body(1), content_type="application/json")
    marks: list[tuple[str, float]] = []
    plain_t0 = time.perf_counter()
    with connection.execute_wrapper(_Marks(marks)):
        for n in range(count, count + count // 2):
            client.post("/alert", data=body(n + 10_000_000), content_type="application/json")
    plain_ms = (time.perf_counter() - plain_t0) / (count // 2) * 1000
    noop_t0 = time.perf_counter()
    for _ in range(count):
        noop_client.post("/bench/noop", data=body(0), content_type="application/json")
    noop_ms = (time.perf_counter() - noop_t0) / count * 1000

    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    for n in range(2, count + 2):
        client.post("/alert", data=body(n), content_type="application/json")
    profiler.disable()
    per_request = (time.perf_counter() - t0) / count * 1000

    ctx.add(
        Row(
            "profile",
            "POST /alert (10 new alerts), one thread in-process",
            plain_ms,
            "ms/request",
            baseline="no-op in-process",
            baseline_value=noop_ms,
            note=f"{per_request:.1f} ms with cProfile on",
        )
    )
    ctx.add(Row("profile", "SQL queries per POST, 10 new alerts", len(new_queries), "queries"))
    ctx.add(Row("profile", "SQL queries per POST, 10 duplicates", len(dup_queries), "queries"))
    holds, steps = _chain_holds(marks)
    if holds:
        hold = _median(holds)
        lines_steps = ", ".join(f"{name} {_median(v):.1f}" for name, v in steps.items())
        ctx.add(
            Row(
                "profile",
                "audit chain lock held per all-new POST (lock taken -> commit done), median",
                hold,
                "ms",
                note=f"max {max(holds):.1f} ms over {len(holds)} POSTs; one at a time: at most "
                f"{1000 / hold:.0f} deliveries/s for the whole deployment at this hold time; "
                f"median ms from each statement to the next: {lines_steps}",
            )
        )
    _cpu_split(ctx, lambda n: client.post("/alert", data=body(n + 20_000_000), content_type="application/json"))
    sql_ms = sum(t for _, t in new_queries) * 1000
    ctx.add(Row("profile", "time in SQL (round trips included), one all-new POST", sql_ms, "ms"))
    shapes = Counter(_shape(sql) for sql, _ in new_queries)
    lines = ["queries of one all-new POST, by shape:"]
    lines += [f"  {n:3d} x {shape}" for shape, n in shapes.most_common(20)]
    lines += ["", "queries of one all-new POST, in order (ms):"]
    lines += [f"  {t * 1000:6.2f}  {_shape(sql)}" for sql, t in new_queries]

    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    groups = _by_package(stats, count)
    lines += ["", "own time per POST by package (ms; psycopg's wait is time waiting on PostgreSQL):"]
    lines += [f"  {ms:7.2f}  {name}" for name, ms in groups]
    stats.sort_stats("cumulative").print_stats(r"(" + "|".join(_OWN) + r")/.*\.py", 40)
    stats.sort_stats("tottime").print_stats(15)
    report = "\n".join(lines) + "\n\n" + out.getvalue().replace(str(ROOT) + "/", "")
    path = ctx.logdir / "profile_webhook.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    print("\n".join("    " + ln for ln in report.splitlines()[:120]))
    ctx.note(f"profile of the webhook written to {path}")


def _cpu_split(ctx: Context, post_one: Callable[[int], object]) -> None:
    """CPU of an all-new delivery in-process (this process's Python, PostgreSQL), then of sealing
    its events in the running sealer process: the cost of each part without a server or a load
    generator around it. The sealer is kept from sealing (its election lock held elsewhere) while
    the deliveries are posted, then let go and timed until nothing is pending."""
    import psycopg

    from audit.sealer import SEALER_LOCK_KEY, pending_count

    count = 100 if ctx.quick else 400
    db.until_sealed(timeout=60)
    with psycopg.connect(db.db_url(), autocommit=True) as hold:
        hold.execute("SELECT pg_advisory_lock(%s)", [SEALER_LOCK_KEY])
        with CpuSampler() as posting:
            for n in range(count):
                post_one(n)
        events = pending_count()
        hold.execute("SELECT pg_advisory_unlock(%s)", [SEALER_LOCK_KEY])
    with CpuSampler() as sealing:
        lag = db.until_sealed(timeout=120)
    if posting.split is None or sealing.split is None or not events:
        return
    web = posting.split.per(count)
    ctx.add(
        Row(
            "profile",
            "CPU per all-new POST in-process (10 alerts): Python + PostgreSQL",
            web["harness"] + web["postgres"],
            "ms",
            note=f"Python {web['harness']:.2f} ms, PostgreSQL {web['postgres']:.2f} ms; {count} POSTs",
        )
    )
    seal = sealing.split.per(events, unit=1e6)
    ctx.add(
        Row(
            "profile",
            "sealer: CPU per sealed event: sealer process + PostgreSQL",
            seal["sealer"] + seal["postgres"],
            "µs",
            note=f"sealer {seal['sealer']:.0f} µs, PostgreSQL {seal['postgres']:.0f} µs; "
            f"{events} events ({events / count:.0f} per POST) sealed in {lag:.1f} s",
        )
    )


class _Recorder:
    """Keeps each statement and its duration (database round trip included)."""

    def __init__(self, into: list[tuple[str, float]]) -> None:
        self.into = into

    def __call__(self, execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.into.append((sql, time.perf_counter() - t0))


def _by_package(stats: pstats.Stats, requests: int) -> list[tuple[str, float]]:
    """Each function's own time, summed by the package it lives in, per request."""
    totals: Counter[str] = Counter()
    for (filename, _line, func), row in stats.stats.items():  # type: ignore[attr-defined]
        tottime = row[2]
        if "site-packages/" in filename:
            name = filename.split("site-packages/", 1)[1].split("/", 1)[0]
            if name == "psycopg" and func == "wait":
                name = "psycopg: waiting on PostgreSQL"
        elif filename.startswith(str(ROOT)):
            name = "autoheal: " + filename[len(str(ROOT)) + 1 :].split("/", 1)[0]
        elif filename == "~":
            name = "builtins: " + func.split(" of ")[0].strip("<>{}")[:40]
        else:
            name = "stdlib: " + filename.rsplit("/", 1)[-1]
        totals[name] += tottime
    return [(name, t / requests * 1000) for name, t in totals.most_common(18)]


class _Marks:
    """Keeps when each statement started (for the chain lock's hold time)."""

    def __init__(self, into: list[tuple[str, float]]) -> None:
        self.into = into

    def __call__(self, execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        self.into.append((sql[:40], time.perf_counter()))
        return execute(sql, params, many, context)


def _chain_holds(marks: list[tuple[str, float]]) -> tuple[list[float], dict[str, list[float]]]:
    """From each chain lock statement to the next pg_notify, in ms, and the steps in between.

    The wake-up's NOTIFY is the first on_commit callback of the delivery, so it starts right
    after the COMMIT that released the lock. Steps are named by the statement that starts them.
    """
    holds: list[float] = []
    steps: dict[str, list[float]] = {}
    window: list[tuple[str, float]] = []
    for sql, at in marks:
        if "pg_advisory_xact_lock" in sql:
            window = [("lock", at)]
        elif window:
            window.append((_step_name(sql), at))
            if "pg_notify" in sql:
                holds.append((at - window[0][1]) * 1000)
                for (name, start), (_, end) in itertools.pairwise(window):
                    steps.setdefault(name, []).append((end - start) * 1000)
                window = []
    return holds, steps


def _step_name(sql: str) -> str:
    if "audit_auditevent" in sql and sql.startswith("SELECT"):
        return "read last hash + build and hash the events"
    if "audit_auditevent" in sql:
        return "INSERT audit events"
    if "observability_series" in sql:
        return "INSERT metric series"
    if sql.startswith("RELEASE"):
        return "release savepoint + COMMIT"
    return sql[:20]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _shape(sql: str) -> str:
    """The statement with its literals blurred, to group repeats."""
    head = sql.split(" WHERE ")[0] if sql.startswith("SELECT") else sql[:90]
    return head[:140]
