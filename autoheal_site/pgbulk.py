"""Many rows in one short PostgreSQL statement: the rows as one JSON parameter.

Django's multi-row inserts adapt every value of every row in Python (``get_db_prep_save``, then
psycopg quoting each one on the client into a statement whose text grows with the rows). Here the
rows travel as ONE ``json`` parameter, encoded by the C JSON encoder, and ``json_to_recordset``
turns it back into typed columns on the server: the statement text is the same whatever the
number of rows, so it is bound on the server and prepared once per connection.

Used on the hot paths only (intake's incidents, jobs and pending audit events; the audit sealer's
chained events); PostgreSQL only: callers keep an ORM path for other databases.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from typing import Any

import psycopg
from django.db import connection
from django.db.models import Field, Model

# The key each JSON row carries for its position, so rows are inserted (and locked) in order.
ORD = "_ord"


class _PreparedCursor(psycopg.Cursor[Any]):
    """Server-side binding, and the statement prepared on first use (its text never varies)."""

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Any:
        return super().execute(query, params, prepare=True if prepare is None else prepare, binary=binary)


def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run one statement on the current connection (in its transaction), bound server side and
    prepared, through Django's cursor wrappers (query logging, counting, error translation)."""
    connection.ensure_connection()
    raw: Any = _PreparedCursor(connection.connection)
    cursor = connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)
    with cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as the JSON parameter, each with its position under ``ORD``."""
    return json.dumps([{**row, ORD: n} for n, row in enumerate(rows)], default=_json_default, ensure_ascii=False)


@dataclass(frozen=True)
class Recordset:
    """A model's columns as ``json_to_recordset`` reads them, and the values of unset columns."""

    names: str  # the quoted column list
    select: str  # r."col", ... in the same order
    definition: str  # "col" type, ..., "_ord" integer
    defaults: dict[str, Any]  # column -> stored form of the field's default

    def full_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Each row with every column: the ones it does not set take the field's default."""
        return [{**self.defaults, **row} for row in rows]


def _stored_default(field: Field[Any, Any]) -> Any:
    value = field.get_default()
    return value if isinstance(value, dict | list) else field.get_db_prep_save(value, connection=connection)


@cache
def recordset(model: type[Model], *, skip: tuple[str, ...] = ()) -> Recordset:
    """The recordset of ``model``'s concrete columns but its primary key (and ``skip``)."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key and f.column not in skip]
    quote = connection.ops.quote_name
    return Recordset(
        names=", ".join(quote(f.column) for f in fields),
        select=", ".join(f"r.{quote(f.column)}" for f in fields),
        definition=", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in fields) + f", {quote(ORD)} integer",
        defaults={f.column: _stored_default(f) for f in fields},
    )
