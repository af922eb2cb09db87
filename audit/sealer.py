"""The sealer: puts committed pending audit events into the hash chain, in batches.

Writers store events in ``AuditPending`` without any lock (``audit.services.audit_record_many``).
One sealer at a time, elected by a PostgreSQL session advisory lock, takes the committed pending
rows in id order, chains them (event id, timestamp, previous hash, hash), inserts them into
``AuditEvent``, deletes them from pending and counts them, all in one transaction; then, still
holding the election lock, it appends them to the JSONL mirror and rings the live stream, so both
see batches in chain order. See docs/audit-chain.md for what a reader can rely on and when.

Why this copes with what concurrent writers do:

- A transaction still open holds pending rows nobody else can see yet: they are simply not taken,
  and join the chain in a later batch, after events that committed before them. The chain order is
  the order of sealing, never the order of the pending ids, so there is no gap to wait for.
- A transaction that rolled back leaves no pending row, only an unused pending id: nothing to do.
- A crash between a writer's commit and the seal leaves the rows pending; the next sealer takes
  them. A crash of the sealer inside its transaction undoes the whole batch (it is still pending).
  A crash after its commit but before the mirror was written is repaired by the next batch, which
  first appends whatever the mirror is missing (``audit.mirror.append_sealed``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from django.db import close_old_connections, connection, transaction

from audit import mirror
from audit.models import AuditPending
from audit.services import (
    _count,
    _insert,
    _lock_chain,
    chain_events,
    chain_mode,
    publish_committed,
    register_pending_committed,
)

logger = logging.getLogger(__name__)

# Session advisory lock electing the one sealer (distinct from the chain lock, which every batch
# also takes for its transaction so prune, import and inline writers stay excluded).
SEALER_LOCK_KEY = 0x5365616C6572  # "Sealer"
BATCH = 2000
_PENDING_COLUMNS = ("id", "ts", "kind", "alertname", "fingerprint", "policy", "target", "message", "actor", "data")

_wake = threading.Event()


def wake_local() -> None:
    """Wake this process's sealer loop (runs after a local writer commits pending events)."""
    _wake.set()


register_pending_committed(wake_local)


def _try_elect() -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite: writers are serialised by the database itself
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [SEALER_LOCK_KEY])
        row = cursor.fetchone()
    return bool(row and row[0])


def _resign() -> None:
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [SEALER_LOCK_KEY])


def _take(limit: int) -> list[dict[str, Any]]:
    """Remove up to ``limit`` committed pending rows, oldest pending id first, and return them."""
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(AuditPending._meta.db_table)
        columns = ", ".join(_PENDING_COLUMNS)
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT %s) "  # noqa: S608  # nosec B608: only the quoted table name and fixed columns
                f"RETURNING {columns}",
                [limit],
            )
            raw = [dict(zip(_PENDING_COLUMNS, row, strict=True)) for row in cursor.fetchall()]
        for row in raw:
            if isinstance(row["data"], str):
                row["data"] = json.loads(row["data"])
        raw.sort(key=lambda row: row["id"])
    else:
        raw = list(AuditPending.objects.order_by("id").values(*_PENDING_COLUMNS)[:limit])
        AuditPending.objects.filter(id__in=[row["id"] for row in raw]).delete()
    for row in raw:
        del row["id"]
    return raw


def audit_seal(*, limit: int = BATCH) -> int | None:
    """Chain up to ``limit`` committed pending events; return how many, or None if another sealer
    is at work. Must run outside any transaction: the batch commits before the mirror and stream
    see it."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    if connection.in_atomic_block:
        raise RuntimeError("audit_seal commits its own transaction; call it outside any")
    if not _try_elect():
        return None
    try:
        started = time.perf_counter()
        with transaction.atomic():
            prev, last_ts = _lock_chain()
            rows = _take(limit)
            if not rows:
                return 0
            events = chain_events(rows, prev, last_ts)
            _insert(events)
            _count(events, time.perf_counter() - started)
        # Committed. Still elected, so no other sealer's batch can reach the mirror or the stream
        # before this one.
        mirror.append_sealed(events)
        publish_committed(events)
        return len(events)
    finally:
        _resign()


def audit_seal_all(*, limit: int = BATCH, wait: float = 5.0) -> int:
    """Seal until nothing committed is pending (a backlog after an outage); return how many.

    Waits up to ``wait`` seconds while another sealer holds the election lock.
    """
    total = 0
    deadline = time.monotonic() + wait
    while True:
        sealed = audit_seal(limit=limit)
        if sealed is None:
            if time.monotonic() > deadline:
                return total
            time.sleep(0.01)
            continue
        total += sealed
        if sealed < limit:
            return total


def pending_count() -> int:
    """How many committed events wait for the sealer."""
    return AuditPending.objects.count()


class SealerLoop:
    """Seal whenever something is pending: woken at once by writers in this process, and at most
    ``interval`` seconds late for writers in other processes. Any number of processes may run one;
    the election lock lets one seal at a time, and whoever finds the lock free seals."""

    def __init__(self, *, interval: float = 0.05, limit: int = BATCH) -> None:
        self.interval = interval
        self.limit = limit
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def run_forever(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.step()
        finally:
            close_old_connections()

    def step(self) -> None:
        """One round: seal a batch, or wait for a wake-up (short when another sealer is busy)."""
        _wake.clear()
        try:
            sealed = audit_seal(limit=self.limit)
        except Exception:
            logger.exception("audit sealer: a batch failed; its events stay pending")
            connection.close()  # start the next round on a fresh connection
            self.stop_event.wait(1.0)
            return
        if sealed is None:
            # Another process is sealing. Events committed here after it took its batch are taken
            # by its next round (it seals again at once after a batch, and polls every interval),
            # so waiting a whole interval delays none of them further, where retrying the election
            # every few milliseconds cost each idle process hundreds of round trips a second.
            self.stop_event.wait(self.interval)
        elif sealed == 0:
            _wake.wait(self.interval)

    @property
    def enabled(self) -> bool:
        return chain_mode() == "sealer"

    def start(self) -> None:
        """Run in a daemon thread of this process (the worker does), when the sealer is in use."""
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self.run_forever, name="audit-sealer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand and stop."""
        self.stop_event.set()
        _wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
