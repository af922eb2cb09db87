"""Which database errors mean "the database is gone" and which mean "this delivery's data is wrong".

The answer decides the webhook's status code, and with it what Alertmanager does: it retries a 5xx
for as long as the alert fires and never retries a 4xx. A 503 for an error that one delivery
causes would be a retry loop that stores nothing (and nothing else grouped with that alert); a 400
for an outage would lose alerts. So:

- ``UNAVAILABLE`` (503, retried): the connection is lost or cannot be made, the server is shutting
  down, restarting or read-only (a replica, a fail-over in progress), a statement or lock timed out,
  the server ran out of a resource (disk, memory, connections), a serialization failure or deadlock
  (the retry succeeds), or an I/O error. Retrying later can succeed without anything changing.
- ``DATA`` (400, not retried): the database refused a value of the delivery (SQLSTATE class 22,
  data exception, e.g. a character it cannot hold, a value too long), a constraint (class 23) or
  a program limit such as an index row too large (class 54).
  The same body would fail the same way forever.
- ``DEFECT`` (500): anything else (a missing table, a syntax error): a fault in Autoheal, answered
  5xx so the delivery is kept by Alertmanager until the fault is fixed.
"""

from __future__ import annotations

import enum
import sqlite3

from django.db import DatabaseError, DataError, IntegrityError, InterfaceError, OperationalError


class DatabaseFault(enum.Enum):
    """What a database error means for the delivery that met it."""

    UNAVAILABLE = "unavailable"
    DATA = "data"
    DEFECT = "defect"


# SQLSTATE classes and codes (PostgreSQL, Appendix A) for which waiting and retrying can succeed.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58", "40", "XX")
_UNAVAILABLE_CODES = {
    "25006",  # read_only_sql_transaction: a standby, or a primary being demoted
    "55P03",  # lock_not_available: lock_timeout
    "55006",  # object_in_use
}
_DATA_CLASSES = ("22", "23", "54")

# SQLite has no SQLSTATE: its OperationalError texts that mean a busy or broken file, not bad data.
_SQLITE_UNAVAILABLE = ("locked", "busy", "disk i/o", "unable to open", "readonly", "read-only", "full", "malformed")


def _sqlstate(exc: BaseException) -> str | None:
    cause = exc.__cause__ or exc.__context__
    for candidate in (exc, cause):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str) and code:
            return code
    return None


def database_fault(exc: BaseException) -> DatabaseFault:
    """Classify a database error raised while storing one delivery."""
    if isinstance(exc, InterfaceError):
        return DatabaseFault.UNAVAILABLE
    code = _sqlstate(exc)
    if code is not None:
        if code in _UNAVAILABLE_CODES or code.startswith(_UNAVAILABLE_CLASSES):
            return DatabaseFault.UNAVAILABLE
        if code.startswith(_DATA_CLASSES):
            return DatabaseFault.DATA
        return DatabaseFault.DEFECT
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, sqlite3.Error) or "sqlite" in type(exc).__module__:
        if isinstance(exc, DataError | IntegrityError):
            return DatabaseFault.DATA
        text = str(exc).lower()
        if isinstance(exc, OperationalError) and any(word in text for word in _SQLITE_UNAVAILABLE):
            return DatabaseFault.UNAVAILABLE
        return DatabaseFault.DEFECT
    if isinstance(exc, OperationalError):
        # No SQLSTATE from a PostgreSQL driver: the connection itself failed (refused, reset, EOF).
        return DatabaseFault.UNAVAILABLE
    if isinstance(exc, DataError | IntegrityError):
        return DatabaseFault.DATA
    if isinstance(exc, DatabaseError):
        return DatabaseFault.DEFECT
    return DatabaseFault.DEFECT


def database_problem(exc: BaseException) -> str:
    """The database's own one-line explanation, without the statement or its parameters."""
    diag = getattr(exc.__cause__, "diag", None)
    primary = getattr(diag, "message_primary", None)
    column = getattr(diag, "column_name", None)
    text = primary or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return f"{text} (column {column})" if column else text
