"""Writes to the stored metric series."""

from __future__ import annotations

import atexit
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

    Off the request path: the count waits in this process and a background flusher stores all
    waiting counts in one upsert at most every ``WEBHOOK_FLUSH_SECONDS`` (a storm of deliveries
    costs one counter write per second per process, not one per delivery, and no delivery commits
    twice). A scrape of this process flushes first, and so does a clean exit; a process killed
    outright loses at most that last second of counts (never an alert).
    """
    pending_webhook_counts.add(code, now=time.time())
    if WEBHOOK_FLUSH_SECONDS > 0:
        _flusher.wake()
    elif connection.in_atomic_block:
        # Synchronous mode (tests in one transaction): stored after the caller's commit.
        try:
            transaction.on_commit(pending_webhook_counts.flush)
        except Exception:  # the caller's transaction is already broken; the next flush stores it
            logger.debug("webhook count deferred: transaction unusable")
    else:
        pending_webhook_counts.flush()


# Seconds a webhook count may wait before the background flusher stores it; 0 stores each count
# right away in the caller's thread (what tests that run inside one transaction need).
WEBHOOK_FLUSH_SECONDS = 1.0


class _Flusher:
    """One daemon thread per process that stores the waiting webhook counts, batched."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._event.set()
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="webhook-counts", daemon=True)
                    self._thread.start()
                    atexit.register(_flush_at_exit)

    def _run(self) -> None:
        while True:
            self._event.wait()
            time.sleep(WEBHOOK_FLUSH_SECONDS)  # gather a second's worth into one statement
            self._event.clear()
            try:
                pending_webhook_counts.flush()
            except Exception:
                logger.exception("could not store webhook request counts; they wait for the next flush")
            finally:
                # One short connection per flush: the thread holds no idle connection between them.
                connection.close()


def _flush_at_exit() -> None:
    try:
        pending_webhook_counts.flush()
    except Exception:  # at exit there is nobody left to tell but the log
        logger.warning("webhook request counts could not be stored at exit")


_flusher = _Flusher()
