"""The statements of one delivery: few round trips, each doing all rows at once.

``alert_ingest`` needs, per delivery, to insert the new incidents, lock and count the known ones,
know which was which, read the policies, insert the jobs, store the audit events and wake the
workers. Done with the ORM that is a round trip per step and per-value work in Python for every
column of every row. Here:

- the incidents are one upsert (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``) that also
  reads the policies' version;
- on PostgreSQL with the audit sealer, the jobs and the delivery's audit events are ONE statement
  (two data-modifying ``WITH`` parts: the job INSERT, whose new ids the event INSERT writes into
  each ``action_queued`` event's ``data.job``); the workers are woken after the commit
  (``remediation.wakeup``), never from inside the transaction;
- on PostgreSQL every statement takes its rows as ONE JSON parameter (``json_to_recordset``), so
  the statement text is the same whatever the number of rows: it is prepared once per connection
  and bound server side, and Python encodes the rows with the C JSON encoder instead of adapting
  each value;
- elsewhere (SQLite 3.35 or later) the same upsert and INSERT run with one placeholder per value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Model
from django.utils.dateparse import parse_datetime

from audit.models import AuditPending
from autoheal_site.pgbulk import ORD, fetch, json_rows, recordset
from remediation.models import Alert, Job, Policy

# Rows per statement on SQLite: far below every parameter limit; only a rare delivery has more.
CHUNK = 500


@dataclass(frozen=True)
class Stored:
    """An incident as the upsert left it: its id, its status, and deliveries before this one."""

    pk: int
    status: str
    previous_deliveries: int


def _columns(model: type[Model]) -> list[Any]:
    return [f for f in model._meta.concrete_fields if not f.primary_key]


def _as_datetime(value: Any) -> datetime:
    """A returned timestamp as an aware datetime (SQLite gives naive UTC, or text)."""
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is None:
            raise ValueError(f"unreadable timestamp {value!r}")
        value = parsed
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _policy_version_sql() -> str:
    # Every committed change to a policy row makes a new row version (new xmin, new ctid): a digest
    # of them changes with every save, delete, import or admin edit, whatever path wrote it.
    table = connection.ops.quote_name(Policy._meta.db_table)
    return f"(SELECT md5(COALESCE(string_agg(id::text || ':' || xmin::text || '@' || ctid::text, ',' ORDER BY id), '')) FROM {table})"  # noqa: S608  # nosec B608: only the quoted table name


# --- PostgreSQL: rows as one JSON parameter (``autoheal_site.pgbulk``) ---------------------------


@cache
def _pg_upsert_sql() -> str:
    table = connection.ops.quote_name(Alert._meta.db_table)
    rs = recordset(Alert)
    return (
        f"WITH stored AS (INSERT INTO {table} ({rs.names}) "  # noqa: S608  # nosec B608: quoted names only
        f"SELECT {rs.select} FROM json_to_recordset(%s::json) AS r({rs.definition}) ORDER BY r.{ORD} "
        "ON CONFLICT (fingerprint, starts_at) DO UPDATE SET "
        f"deliveries = {table}.deliveries + 1, last_received_at = EXCLUDED.last_received_at "
        "RETURNING id, fingerprint, starts_at, status, deliveries) "
        f"SELECT stored.*, {_policy_version_sql()} FROM stored"
    )


@cache
def _pg_jobs_events_sql(*, with_jobs: bool) -> str:
    """The jobs and the audit events of a delivery in one statement.

    An event that announces a job carries the job's (alert, policy) as ``_job_alert`` and
    ``_job_policy`` (unique within a delivery: one job per policy and incident); the event INSERT
    joins the new jobs on them and writes the job's id into ``data.job``.
    """
    quote = connection.ops.quote_name
    ev = recordset(AuditPending)
    events_table = quote(AuditPending._meta.db_table)
    event_def = f"{ev.definition}, _job_alert bigint, _job_policy bigint"
    data = quote("data")
    if not with_jobs:
        return (
            f"INSERT INTO {events_table} ({ev.names}) SELECT {ev.select} "  # noqa: S608  # nosec B608: quoted names only
            f"FROM json_to_recordset(%s::json) AS r({event_def}) ORDER BY r.{ORD} RETURNING NULL"
        )
    jb = recordset(Job)
    jobs_table = quote(Job._meta.db_table)
    selected = ev.select.replace(
        f"r.{data}",
        f"CASE WHEN j.id IS NULL THEN r.{data} ELSE jsonb_set(r.{data}, '{{job}}', to_jsonb(j.id)) END",
    )
    return (
        f"WITH j AS (INSERT INTO {jobs_table} ({jb.names}) SELECT {jb.select} "  # noqa: S608  # nosec B608: quoted names only
        f"FROM json_to_recordset(%s::json) AS r({jb.definition}) ORDER BY r.{ORD} RETURNING id, alert_id, policy_id), "
        f"e AS (INSERT INTO {events_table} ({ev.names}) SELECT {selected} "
        f"FROM json_to_recordset(%s::json) AS r({event_def}) "
        "LEFT JOIN j ON j.alert_id = r._job_alert AND j.policy_id IS NOT DISTINCT FROM r._job_policy "
        f"ORDER BY r.{ORD} RETURNING NULL) "
        "SELECT j.id, j.alert_id, j.policy_id FROM j"
    )


def pg_jobs_and_events(
    jobs: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]
) -> dict[tuple[int, int | None], int]:
    """PostgreSQL: insert the jobs and the pending audit events in one statement.

    ``jobs`` are column values (``alert_id``, ``policy_id`` ... : the rest take the fields'
    defaults); ``events`` are pending audit rows in stored form, an event that names a job having
    ``_job_alert`` and ``_job_policy``. Returns the new job ids by (alert id, policy id).
    """
    if not jobs and not events:
        return {}
    if not jobs:
        fetch(_pg_jobs_events_sql(with_jobs=False), [json_rows(recordset(AuditPending).full_rows(events))])
        return {}
    params = [json_rows(recordset(Job).full_rows(jobs)), json_rows(recordset(AuditPending).full_rows(events))]
    records = fetch(_pg_jobs_events_sql(with_jobs=True), params)
    return {(alert_id, policy_id): pk for pk, alert_id, policy_id in records}


# --- Both databases -----------------------------------------------------------------------------


def _values(objs: Sequence[Model], fields: list[Any]) -> tuple[str, list[Any]]:
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [f.get_db_prep_save(getattr(obj, f.attname), connection=connection) for obj in objs for f in fields]
    return ", ".join([row] * len(objs)), params


def incidents_upsert(
    rows: Sequence[Mapping[str, Any]],
) -> tuple[dict[tuple[str, datetime], Stored], str | None]:
    """Insert the incidents that are new, count a delivery on those that exist, lock them all.

    ``rows`` are column values of new incidents with ``deliveries=1``, in a fixed order (so two
    deliveries sharing incidents lock them in the same order and never deadlock). Returns each
    incident by (fingerprint, starts_at), and the policies' version on PostgreSQL (None
    elsewhere), read in the same statement.
    """
    found: dict[tuple[str, datetime], Stored] = {}
    version: str | None = None
    if connection.vendor == "postgresql":
        if rows:
            for record in fetch(_pg_upsert_sql(), [json_rows(recordset(Alert).full_rows(rows))]):
                pk, fingerprint, starts_at, status, deliveries, version = record
                found[(fingerprint, starts_at)] = Stored(pk, status, deliveries - 1)
        return found, version
    fields = _columns(Alert)
    table = connection.ops.quote_name(Alert._meta.db_table)
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    for start in range(0, len(rows), CHUNK):
        chunk = [Alert(**row) for row in rows[start : start + CHUNK]]
        values, params = _values(chunk, fields)
        sql = (
            f"INSERT INTO {table} ({names}) VALUES {values} "  # noqa: S608  # nosec B608: quoted names, placeholders
            "ON CONFLICT (fingerprint, starts_at) DO UPDATE SET "
            f"deliveries = {table}.deliveries + 1, last_received_at = EXCLUDED.last_received_at "
            "RETURNING id, fingerprint, starts_at, status, deliveries"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for pk, fingerprint, starts_at, status, deliveries in cursor.fetchall():
                found[(fingerprint, _as_datetime(starts_at))] = Stored(pk, status, deliveries - 1)
    return found, version


def jobs_insert(jobs: Sequence[Model]) -> None:
    """Insert the jobs with one statement per chunk and set their ids, like ``bulk_create``."""
    if not jobs:
        return
    model = type(jobs[0])
    fields = _columns(model)
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    for start in range(0, len(jobs), CHUNK):
        chunk = jobs[start : start + CHUNK]
        values, params = _values(chunk, fields)
        with connection.cursor() as cursor:
            # Like bulk_create, this relies on INSERT ... VALUES ... RETURNING keeping the order.
            cursor.execute(f"INSERT INTO {table} ({names}) VALUES {values} RETURNING id", params)  # noqa: S608  # nosec B608: quoted names, placeholders
            for job, record in zip(chunk, cursor.fetchall(), strict=True):
                job.pk = record[0]
                job._state.adding = False
                job._state.db = connection.alias
