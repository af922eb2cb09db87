"""The benchmark's own PostgreSQL database and Redis db, recreated for each run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg

from bench.procs import ROOT

DEFAULT_DB_URL = "postgres://postgres@127.0.0.1:5432/autoheal_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"


def db_url() -> str:
    """``AUTOHEAL_BENCH_DATABASE_URL``, else the test database's name with ``_bench`` appended
    (so runs that keep their tests apart keep their benchmarks apart too), else the default."""
    if os.environ.get("AUTOHEAL_BENCH_DATABASE_URL"):
        return os.environ["AUTOHEAL_BENCH_DATABASE_URL"]
    test_url = os.environ.get("AUTOHEAL_TEST_DATABASE_URL")
    if test_url:
        parts = urlsplit(test_url)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_bench"))
    return DEFAULT_DB_URL


def redis_url() -> str:
    """``AUTOHEAL_BENCH_REDIS_URL``, else the tests' Redis database, else the default."""
    return os.environ.get("AUTOHEAL_BENCH_REDIS_URL") or os.environ.get("AUTOHEAL_TEST_REDIS_URL") or DEFAULT_REDIS_URL


def _maintenance_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.replace("_", "").isalnum():
        raise ValueError("the benchmark database name must be letters, digits and underscores")
    return urlunsplit(parts._replace(path="/postgres")), name


def recreate_database(url: str) -> None:
    """Drop and create the benchmark database (it holds nothing but benchmark data)."""
    admin_url, name = _maintenance_url(url)
    host = urlsplit(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the benchmark only talks to a loopback database")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def migrate(env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def truncate_state() -> None:
    """Empty alerts, jobs, audit events and policies between scenarios (raw SQL: the audit
    trail is append-only through the ORM, and this database is the benchmark's own)."""
    from django.db import connection

    from audit.models import AuditEvent, AuditPending
    from remediation.models import Alert, Job, Policy, Switch

    tables = [m._meta.db_table for m in (Job, Alert, AuditEvent, AuditPending, Policy, Switch)]
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")


def until_sealed(timeout: float) -> float:
    """Seconds until no audit event is pending (bounded by ``timeout``)."""
    from audit.sealer import pending_count

    t0 = time.monotonic()
    while pending_count() and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    return time.monotonic() - t0
