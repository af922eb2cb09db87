"""Writes to the stored metric series."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence

from django.db import Error, connection, transaction

from observability.models import MetricSeries
from observability.series import Delta, EventLike, audit_deltas, webhook_deltas

logger = logging.getLogger(__name__)

ACCEPTED = 202


def series_add(*, deltas: Sequence[Delta]) -> None:
    """Apply deltas in ONE upsert statement, in the caller's transaction.

    ``INSERT ... ON CONFLICT (name, labels) DO UPDATE`` is atomic per row on PostgreSQL and
    SQLite, so any number of processes can add to the same counter without losing an increment.
    Callers pass deltas sorted by (name, labels) (``merge_deltas`` does) so that two transactions
    touching the same rows always lock them in the same order and cannot deadlock.
    """
    if not deltas:
        return
    table = connection.ops.quote_name(MetricSeries._meta.db_table)
    rows = ", ".join(["(%s, %s, %s, %s)"] * len(deltas))
    params: list[str | float] = []
    for delta in deltas:
        params.extend([delta.name, delta.labels, delta.merge, delta.value])
    sql = (
        f"INSERT INTO {table} (name, labels, merge, value) VALUES {rows} "  # noqa: S608  # nosec B608: only the table name is interpolated
        f"ON CONFLICT (name, labels) DO UPDATE SET value = CASE "
        f"WHEN excluded.merge = 'max' THEN "
        f"(CASE WHEN excluded.value > {table}.value THEN excluded.value ELSE {table}.value END) "
        f"ELSE {table}.value + excluded.value END"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


class _PendingWebhookCounts:
    """Webhook answers not yet stored, per process.

    A 503 means the database is unavailable, so its count cannot be stored right away; it waits
    here and goes out with the next write that works, so no answer is ever left uncounted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._codes: Counter[int] = Counter()
        self._last_accepted: float | None = None

    def add(self, code: int, *, now: float) -> None:
        with self._lock:
            self._codes[code] += 1
            if code == ACCEPTED:
                self._last_accepted = max(now, self._last_accepted or now)

    def flush(self) -> bool:
        """Store what is pending in one statement; keep it for later if the database fails."""
        with self._lock:
            codes, last_accepted = dict(self._codes), self._last_accepted
            self._codes.clear()
            self._last_accepted = None
        if not codes:
            return True
        try:
            with transaction.atomic():
                series_add(deltas=webhook_deltas(codes, last_accepted))
        except Error:
            logger.warning("webhook request counts kept for later: database unavailable")
            with self._lock:
                self._codes.update(codes)
                if last_accepted is not None:
                    self._last_accepted = max(last_accepted, self._last_accepted or last_accepted)
            return False
        return True

    def pending(self) -> dict[int, int]:
        with self._lock:
            return dict(self._codes)


pending_webhook_counts = _PendingWebhookCounts()


def audit_write_observe(events: Sequence[EventLike], elapsed: float) -> None:
    """Count a chained audit batch by kind and observe its write time (registered with the trail).

    Runs inside the chaining transaction (one upsert for the whole batch), so the numbers move if
    and only if the events commit, in whichever process chained them.
    """
    series_add(deltas=audit_deltas(events, elapsed))


def webhook_request_count(*, code: int) -> None:
    """Count one answer of POST /alert (autoheal_webhook_requests_total{code}).

    A 202 also moves ``autoheal_webhook_last_accepted_timestamp``, the heartbeat's second source.

    Stored in its own transaction: inside a caller's open transaction it waits for the commit, so
    a rolled-back request is still counted by the next flush rather than lost with the rollback.
    """
    pending_webhook_counts.add(code, now=time.time())
    if connection.in_atomic_block:
        try:
            transaction.on_commit(pending_webhook_counts.flush)
        except Exception:  # the caller's transaction is already broken; the next flush stores it
            logger.debug("webhook count deferred: transaction unusable")
        return
    pending_webhook_counts.flush()
