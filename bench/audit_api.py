"""The audit trail at 1,000,000 events: /audit per filter vs. the same SQL run raw, and write latency.

    python -m bench.audit_api [--events 1000000] [--repeat 40] [--reload] [--writers 8] [--quick]

Needs PostgreSQL (``AUTOHEAL_BENCH_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/autoheal_bench_audit``); the database is created, migrated and
loaded on the first run and reused afterwards (``--reload`` loads it again). The load is one
``INSERT ... SELECT FROM generate_series`` with realistic distributions of kinds, alert names,
targets, messages and labels, and timestamps evenly spread over 90 days. Its hashes are synthetic
(the chain is not valid, nothing here verifies it); everything else is what ``audit_record`` writes.

Each scenario is requested ``--repeat`` times through Django's test client as an ops user (the
whole middleware, authentication and DRF stack, without a network hop); the audit queries that the
request ran are then replayed raw on a psycopg cursor as the baseline. Prints p50/p95/max for both
and the ratio. Finally ``--writers`` threads call ``audit_record`` concurrently and the latency of
each call (including its commit) is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from typing import Any
from urllib.parse import urlencode

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/autoheal_bench_audit"


def _setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("AUTOHEAL_RATE_LIMIT", "100000000/60s")
    os.environ.setdefault("AUTOHEAL_AUDIT_JSONL", "")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoheal_site.settings")
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# Realistic shape: most events are alerts arriving and their duplicates; actions are fewer; circuit,
# switch and policy changes are rare. (kind, cumulative probability)
KINDS = [
    ("alert_received", 0.28),
    ("alert_duplicate", 0.52),
    ("alert_resolved", 0.60),
    ("no_policy", 0.65),
    ("action_queued", 0.73),
    ("action_started", 0.81),
    ("action_ok", 0.88),
    ("action_verified", 0.93),
    ("action_skipped", 0.96),
    ("action_dry_run", 0.975),
    ("action_fail", 0.985),
    ("action_retry", 0.99),
    ("action_ineffective", 0.995),
    ("alert_truncated", 0.998),
    ("webhook_rejected", 0.9993),
    ("ack", 0.9996),
    ("switch_changed", 0.9998),
    ("circuit_open", 0.99990),
    ("circuit_closed", 0.99995),
    ("policy_changed", 1.01),
]
ALERTNAMES = [
    "ContainerUnhealthy", "HighMemoryUsage", "DiskAlmostFull", "HighCPULoad", "ServiceDown",
    "TargetMissing", "HighLatency", "ErrorRateHigh", "QueueBacklog", "CertificateExpiring",
    "PodCrashLooping", "NodeNotReady", "DatabaseConnectionsHigh", "ReplicationLag", "CacheMissRate",
    "BackupFailed", "JobFailed", "HTTP5xxSpike", "OOMKilled", "SwapUsageHigh",
]  # fmt: skip


def _load(events: int) -> None:
    from django.db import connection

    kind_case = " ".join(f"WHEN r.k < {p} THEN '{k}'" for k, p in KINDS)
    names = "ARRAY[" + ",".join(f"'{a}'" for a in ALERTNAMES) + "]"
    # Alert names: a power law over 20 names plus a long tail of 180 rarer ones ("Custom042").
    # Targets: 2000 containers. Messages: per kind, as the engine writes them.
    # Only this module's own constants are interpolated into the statement.
    sql = f"""
    INSERT INTO audit_auditevent (ts, kind, alertname, fingerprint, policy, target, message, actor, data, prev_hash, hash, search)
    SELECT ts, kind, alertname, fingerprint, policy, target, message, actor, data,
           md5(i::text || 'p') || md5(i::text || 'q'), md5(i::text) || md5(i::text || 'h'),
           lower(alertname || E'\\n' || target || E'\\n' || message || E'\\n' ||
                 CASE WHEN data ? 'labels' THEN 'alertname=' || alertname || ' container=' || target ||
                      ' instance=' || (data->'labels'->>'instance') || ' severity=' || (data->'labels'->>'severity')
                      ELSE '' END)
    FROM (
      SELECT i, ts, kind, alertname, md5(alertname || target) AS fingerprint,
             CASE WHEN kind LIKE 'action%' THEN 'restart-' || lower(alertname) ELSE '' END AS policy,
             target,
             CASE
               WHEN kind IN ('alert_received','alert_duplicate') THEN 'alert ' || alertname || ' firing for ' || target
               WHEN kind = 'alert_resolved' THEN 'alert ' || alertname || ' resolved for ' || target
               WHEN kind = 'action_ok' THEN 'restart_container ' || target || ' ok in ' || round((r2 * 3)::numeric, 2) || 's'
               WHEN kind = 'action_fail' THEN 'restart_container ' || target || ' failed: container not found'
               WHEN kind = 'action_skipped' THEN 'skipped ' || target || ': cooldown'
               WHEN kind = 'no_policy' THEN 'no policy matches ' || alertname
               ELSE replace(kind, '_', ' ') || ' ' || target
             END AS message,
             CASE WHEN kind IN ('ack','switch_changed','policy_changed') THEN 'ops-' || (i % 7) ELSE '' END AS actor,
             CASE WHEN kind LIKE 'alert%' THEN jsonb_build_object('labels', jsonb_build_object(
                    'alertname', alertname, 'container', target,
                    'instance', 'host-' || (i % 40) || ':9100',
                    'severity', CASE WHEN r2 < 0.2 THEN 'critical' ELSE 'warning' END))
                  WHEN kind = 'action_ok' THEN jsonb_build_object('duration_seconds', round((r2 * 3)::numeric, 2))
                  ELSE '{{}}'::jsonb END AS data
      FROM (
        SELECT i, r.k, r2,
               now() - interval '90 days' + (i * (interval '90 days' / {events})) AS ts,
               CASE {kind_case} END AS kind,
               CASE WHEN r3 < 0.85 THEN ({names})[1 + floor(20 * power(r4, 2.5))::int]
                    ELSE 'Custom' || lpad((floor(180 * r4))::int::text, 3, '0') END AS alertname,
               'web-' || floor(2000 * power(r5, 1.5))::int AS target
        FROM generate_series(1, {events}) AS i,
             LATERAL (SELECT random() + i * 0 AS k) AS r,
             LATERAL (SELECT random() + i * 0 AS r2, random() + i * 0 AS r3, random() + i * 0 AS r4,
                             random() + i * 0 AS r5) AS q
      ) AS base
    ) AS shaped
    ORDER BY i
    """  # noqa: S608
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE audit_auditevent RESTART IDENTITY")
        cursor.execute(sql)
        # A few needles: rare strings placed at known depths, for the rare-`contains` cases.
        for position in (events // 7, events // 2, events - events // 10):
            cursor.execute(
                "UPDATE audit_auditevent SET message = message || ' needle-q7z', "
                "search = search || ' needle-q7z' WHERE id = %s",
                [position],
            )
        cursor.execute("VACUUM ANALYZE audit_auditevent")
    print(f"loaded {events} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def _scenarios(events: int) -> list[tuple[str, dict[str, Any]]]:
    mid = events // 2
    from audit.filters import encode_cursor

    return [
        ("no filter", {}),
        ("n=5000", {"n": 5000}),
        ("cursor deep (id 500k)", {"cursor": encode_cursor(mid)}),
        ("kind common", {"kind": "alert_received"}),
        ("kind rare", {"kind": "circuit_open"}),
        ("kind list of 3", {"kind": "action_ok,action_fail,action_unknown"}),
        ("kind rare list", {"kind": "circuit_open,switch_changed,policy_changed"}),
        ("alertname common", {"alertname": "ContainerUnhealthy"}),
        ("alertname rare", {"alertname": "Custom177"}),
        ("alertname absent", {"alertname": "NoSuchAlert"}),
        ("since 15m", {"since": "15m"}),
        ("since 7d", {"since": "7d"}),
        ("until 30d ago", {"until": "30d"}),
        ("until 89d ago", {"until": "89d"}),
        ("since 60d + until 59d", {"since": "60d", "until": "59d"}),
        ("contains common", {"contains": "web-1"}),
        ("contains label pair", {"contains": "container=web-17 "}),
        ("contains rare (needle)", {"contains": "needle-q7z"}),
        ("contains absent, common trigrams", {"contains": "restart web"}),
        ("contains absent", {"contains": "zzqqxxj"}),
        ("contains 1 char", {"contains": "x"}),
        ("contains rare, deep cursor", {"contains": "needle-q7z", "cursor": encode_cursor(mid)}),
        ("kind + alertname", {"kind": "action_ok", "alertname": "DiskAlmostFull"}),
        ("kind list + alertname rare", {"kind": "action_ok,action_fail", "alertname": "Custom011"}),
        ("kind + since 2h", {"kind": "action_fail", "since": "2h"}),
        ("kind rare + until 30d", {"kind": "circuit_open", "until": "30d"}),
        ("alertname + since 7d", {"alertname": "HighLatency", "since": "7d"}),
        ("alertname + until 45d", {"alertname": "HighLatency", "until": "45d"}),
        ("alertname + contains", {"alertname": "ContainerUnhealthy", "contains": "web-42"}),
        ("kind + contains rare", {"kind": "action_ok", "contains": "needle-q7z"}),
        ("since 7d + contains", {"since": "7d", "contains": "critical"}),
        (
            "all five",
            {
                "kind": "alert_received,alert_duplicate",
                "alertname": "HighCPULoad",
                "since": "30d",
                "until": "1d",
                "contains": "web-1",
            },
        ),
    ]


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95, ordered[-1]


def _measure_api(repeat: int, events: int, only: str = "") -> list[dict[str, Any]]:
    import psycopg
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user, _ = User.objects.get_or_create(username="bench-ops")
    user.groups.add(Group.objects.get_or_create(name="ops")[0])
    client = Client()
    client.force_login(user)
    results = []
    for label, params in _scenarios(events):
        if only and only not in label:
            continue
        url = "/audit?" + urlencode(params)
        with CaptureQueriesContext(connection) as captured:
            first = client.get(url)
        if first.status_code != 200:
            raise SystemExit(f"{label}: HTTP {first.status_code} {first.content[:200]!r}")
        body = first.json()
        # The baseline replays what the request sent about the audit (bounds, the page query, the
        # search budget's savepoint and timeout) on a plain psycopg connection; sessions, users and
        # roles are the framework's share and stay out of it.
        audit_sql = [
            q["sql"]
            for q in captured.captured_queries
            if "audit_auditevent" in q["sql"] or "statement_timeout" in q["sql"] or "SAVEPOINT" in q["sql"]
        ]
        api: list[float] = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(url)
            api.append(time.perf_counter() - started)
            assert response.status_code == 200
        raw: list[float] = []
        with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
            for _ in range(repeat):
                started = time.perf_counter()
                with conn.cursor() as cursor:
                    for sql in audit_sql:
                        try:
                            cursor.execute(sql)
                        except psycopg.errors.QueryCanceled:
                            conn.rollback()  # the search budget ran out, as in the request
                            continue
                        if cursor.description is not None:
                            cursor.fetchall()
                conn.rollback()
                raw.append(time.perf_counter() - started)
        results.append(
            {
                "label": label,
                "count": body["count"],
                "next": body["next"] is not None,
                "api": _percentiles(api),
                "raw": _percentiles(raw),
                "queries": sum("audit_auditevent" in sql for sql in audit_sql),
            }
        )
        print(f"  {label}: done", file=sys.stderr)
    return results


def _measure_writes(writers: int, per_writer: int) -> tuple[float, float, float, int]:
    from django.db import connection

    from audit.services import audit_record

    samples: list[float] = []
    lock = threading.Lock()

    def work(number: int) -> None:
        mine = []
        try:
            for i in range(per_writer):
                started = time.perf_counter()
                audit_record(
                    kind="action_ok",
                    alertname="ContainerUnhealthy",
                    target=f"web-{number}",
                    message=f"restart_container web-{number} ok (bench write {i})",
                    data={"duration_seconds": 0.1},
                )
                mine.append(time.perf_counter() - started)
        finally:
            connection.close()
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    p50, p95, worst = _percentiles(samples)
    return p50, p95, worst, len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--reload", action="store_true")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--writes-per-writer", type=int, default=250)
    parser.add_argument("--only", default="", help="run only the scenarios whose name contains this")
    parser.add_argument("--no-writes", action="store_true", help="skip the concurrent write measurement")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100,000 events, 10 requests, 4x50 writes")
    args = parser.parse_args()
    if args.quick:
        args.events, args.repeat, args.writers, args.writes_per_writer = 100_000, 10, 4, 50
    if not 1 <= args.repeat <= 1000 or not 1 <= args.writers <= 64 or not 1 <= args.writes_per_writer <= 10_000:
        raise SystemExit("--repeat 1..1000, --writers 1..64, --writes-per-writer 1..10000")
    _setup(os.environ.get("AUTOHEAL_BENCH_DATABASE_URL", DEFAULT_URL))
    from audit.models import AuditEvent

    present = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    if args.reload or present < args.events:
        _load(args.events)
    results = _measure_api(args.repeat, args.events, args.only)
    print(f"\n/audit at {args.events:,} events, {args.repeat} requests per scenario (ms)")
    header = f"{'scenario':36} {'n':>5} {'next':>4} {'q':>2} | {'API p50':>8} {'p95':>7} {'max':>7} | {'SQL p50':>8} {'p95':>7} {'max':>7} | {'p95 x':>5}"
    print(header)
    print("-" * len(header))
    for r in results:
        api = [v * 1000 for v in r["api"]]
        raw = [v * 1000 for v in r["raw"]]
        ratio = api[1] / raw[1] if raw[1] else float("inf")
        print(
            f"{r['label']:36} {r['count']:>5} {'yes' if r['next'] else 'no':>4} {r['queries']:>2} | "
            f"{api[0]:8.1f} {api[1]:7.1f} {api[2]:7.1f} | {raw[0]:8.1f} {raw[1]:7.1f} {raw[2]:7.1f} | {ratio:5.1f}"
        )
    worst = max(r["api"][1] for r in results) * 1000
    print(f"worst API p95: {worst:.1f} ms; worst single request: {max(r['api'][2] for r in results) * 1000:.1f} ms")
    if args.no_writes:
        return
    p50, p95, top, count = _measure_writes(args.writers, args.writes_per_writer)
    print(
        f"\naudit_record with {args.writers} concurrent writers, {count} writes (ms, incl. commit): "
        f"p50 {p50 * 1000:.2f}  p95 {p95 * 1000:.2f}  max {top * 1000:.2f}"
    )


if __name__ == "__main__":
    main()
