"""The statements of one delivery: few round trips, each doing all rows at once.

``alert_ingest`` needs, per delivery, to insert the new incidents, lock and count the known ones,
know which was which, read the policies, insert the jobs and wake the workers. Done with the ORM
that is a round trip per step; here the incidents are one upsert (``INSERT ... ON CONFLICT DO
UPDATE ... RETURNING``) that also reads the policies' version, and the jobs are one INSERT that
also sends the workers' ``NOTIFY`` (PostgreSQL delivers it when the transaction commits, and never
if it rolls back). Both statements run on PostgreSQL and SQLite (3.35 or later); only PostgreSQL
has the policy version and the NOTIFY.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models import Model
from django.utils.dateparse import parse_datetime

from remediation.models import Alert, Policy

# Rows per statement: far below every parameter limit, and only a rare delivery has more alerts.
CHUNK = 500


@dataclass(frozen=True)
class Stored:
    """An incident as the upsert left it: its id, its status, and deliveries before this one."""

    pk: int
    status: str
    previous_deliveries: int


def _columns(model: type[Model]) -> list[Any]:
    return [f for f in model._meta.concrete_fields if not f.primary_key]


def _values(objs: Sequence[Model], fields: list[Any]) -> tuple[str, list[Any]]:
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [f.get_db_prep_save(getattr(obj, f.attname), connection=connection) for obj in objs for f in fields]
    return ", ".join([row] * len(objs)), params


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


def incidents_upsert(rows: Sequence[Alert]) -> tuple[dict[tuple[str, datetime], Stored], str | None]:
    """Insert the incidents that are new, count a delivery on those that exist, lock them all.

    ``rows`` are unsaved with ``deliveries=1``, in a fixed order (so two deliveries sharing
    incidents lock them in the same order and never deadlock). Returns each incident by
    (fingerprint, starts_at), and the policies' version on PostgreSQL (None elsewhere), read in
    the same statement.
    """
    fields = _columns(Alert)
    table = connection.ops.quote_name(Alert._meta.db_table)
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    postgres = connection.vendor == "postgresql"
    found: dict[tuple[str, datetime], Stored] = {}
    version: str | None = None
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        values, params = _values(chunk, fields)
        upsert = (
            f"INSERT INTO {table} ({names}) VALUES {values} "  # noqa: S608  # nosec B608: quoted names, placeholders
            "ON CONFLICT (fingerprint, starts_at) DO UPDATE SET "
            f"deliveries = {table}.deliveries + 1, last_received_at = EXCLUDED.last_received_at "
            "RETURNING id, fingerprint, starts_at, status, deliveries"
        )
        # The version is read in the upsert's own statement: no round trip of its own.
        version_sql = _policy_version_sql()
        sql = f"WITH stored AS ({upsert}) SELECT stored.*, {version_sql} FROM stored" if postgres else upsert  # noqa: S608  # nosec B608: built from quoted names only
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for record in cursor.fetchall():
                pk, fingerprint, starts_at, status, deliveries = record[:5]
                if postgres:
                    version = record[5]
                found[(fingerprint, _as_datetime(starts_at))] = Stored(pk, status, deliveries - 1)
    return found, version


def jobs_insert(jobs: Sequence[Model], *, notify_channel: str | None) -> None:
    """Insert the jobs with one statement per chunk and set their ids, like ``bulk_create``.

    With ``notify_channel`` (PostgreSQL) the same statement sends ``NOTIFY``: delivered when the
    transaction commits, once (PostgreSQL folds identical notifications of one transaction).
    """
    if not jobs:
        return
    model = type(jobs[0])
    fields = _columns(model)
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    for start in range(0, len(jobs), CHUNK):
        chunk = jobs[start : start + CHUNK]
        values, params = _values(chunk, fields)
        returning = "id"
        if notify_channel is not None:
            returning += ", pg_notify(%s, '')"
            params.append(notify_channel)
        with connection.cursor() as cursor:
            # Like bulk_create, this relies on INSERT ... VALUES ... RETURNING keeping the order.
            cursor.execute(f"INSERT INTO {table} ({names}) VALUES {values} RETURNING {returning}", params)  # noqa: S608  # nosec B608: quoted names, placeholders
            for job, record in zip(chunk, cursor.fetchall(), strict=True):
                job.pk = record[0]
                job._state.adding = False
                job._state.db = connection.alias
