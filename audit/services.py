"""The one writer of the audit trail, and its retention and restore tools.

``audit_record`` writes the event in the caller's transaction. With the sealer (PostgreSQL's
default) it is stored as pending, without any lock, and ``audit.sealer`` later chains committed
pending events in batches; inline (SQLite's default) it is chained here under the chain lock. Either
way the chained events are counted in the metrics in the chaining transaction and, only after it
commits, appended to the JSONL mirror and published to the live stream. An event whose transaction
rolls back leaves no trace. See docs/audit-chain.md.

``audit_prune`` is the only code that deletes events; ``audit_import`` restores exported ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.management.color import no_style
from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit import metrics, mirror
from audit.models import ALL_KINDS, AuditAnchor, AuditEvent, AuditExport, AuditPending, iso_utc, search_text
from autoheal_site import pgbulk
from autoheal_site.text import dumps_compact

logger = logging.getLogger(__name__)

# A fixed key for PostgreSQL's transaction-scoped advisory lock that serialises chain writers.
_CHAIN_LOCK_KEY = 0x4175646974  # "Audit"
GENESIS_HASH = "0" * 64

# Field limits, applied before hashing so the stored event is exactly the hashed one.
_LIMITS = {"message": 10000, "alertname": 200, "fingerprint": 64, "policy": 100, "target": 255, "actor": 150}
# The fields of an event that its hash covers, in the order of INTERFACE.md.
HASHED_FIELDS = ("ts", "kind", "alertname", "fingerprint", "policy", "target", "message", "actor", "data")


# Called after commit with each committed batch of chained events, in chain order.
_after_commit_batch_hooks: list[Callable[[list[AuditEvent]], None]] = []
# Called after a writer's transaction commits pending (not yet chained) events: wakes a sealer.
_pending_hooks: list[Callable[[], None]] = []


def register_after_commit_batch(hook: Callable[[list[AuditEvent]], None]) -> None:
    """Register a callable run once per chained, committed batch (the stream's doorbell)."""
    if hook not in _after_commit_batch_hooks:
        _after_commit_batch_hooks.append(hook)


def register_pending_committed(hook: Callable[[], None]) -> None:
    """Register a callable run after a transaction that stored pending events commits."""
    if hook not in _pending_hooks:
        _pending_hooks.append(hook)


# The canonical JSON of a hashed body (built once: json.dumps with options builds one per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def body_hash(prev_hash: str, body: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the canonical JSON of an event's hashed fields.

    ``body`` holds ``HASHED_FIELDS`` with ``ts`` already in the ``iso_utc`` form.
    """
    canonical = _CANONICAL.encode(body)
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def event_hash(prev_hash: str, event: AuditEvent) -> str:
    """The chained hash of one event."""
    # The id is left out so the hash can be sealed before the INSERT; order is still protected
    # because each event names its predecessor's hash and audit_verify walks the ids in order.
    return body_hash(prev_hash, event.body())


def _lock_chain() -> tuple[str, datetime | None]:
    """Take the chain lock for this transaction; return the last event's hash and timestamp."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
    # SQLite transactions here are BEGIN IMMEDIATE: writers are already serialised.
    last = AuditEvent.objects.order_by("-id").values_list("hash", "ts").first()
    if last is None:
        return GENESIS_HASH, None
    return last[0] or GENESIS_HASH, last[1]


def audit_record(
    *,
    kind: str,
    message: str = "",
    alertname: str = "",
    fingerprint: str = "",
    policy: str = "",
    target: str = "",
    actor: str = "",
    data: dict[str, Any] | None = None,
    ts: datetime | None = None,
) -> AuditEvent:
    """Record one audit event in the current transaction (or its own, if none is open)."""
    return audit_record_many(
        [
            {
                "kind": kind,
                "message": message,
                "alertname": alertname,
                "fingerprint": fingerprint,
                "policy": policy,
                "target": target,
                "actor": actor,
                "data": data or {},
                "ts": ts,
            }
        ]
    )[0]


def chain_mode() -> str:
    """How events join the chain here: ``sealer`` or ``inline`` (see ``AUTOHEAL_AUDIT_CHAIN``)."""
    choice = str(getattr(settings, "AUTOHEAL_AUDIT_CHAIN", "auto"))
    if choice == "auto":
        return "sealer" if connection.vendor == "postgresql" else "inline"
    return choice


def _normalise(items: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Check each item and bring it to the stored form (field limits applied, ``ts`` set)."""
    rows = []
    for item in items:
        if item["kind"] not in ALL_KINDS:
            raise ValueError(f"unknown audit kind: {item['kind']!r}")
        if item.get("data") is not None and not isinstance(item["data"], dict):
            raise ValueError("audit data must be a JSON object (a dict)")
        given = item.get("ts")
        if given is not None and timezone.is_naive(given):
            raise ValueError("audit ts must be timezone-aware")
        fields = {name: str(item.get(name) or "")[:limit] for name, limit in _LIMITS.items()}
        rows.append({"ts": given or now, "kind": item["kind"], "data": item.get("data") or {}, **fields})
    return rows


def audit_record_many(items: list[dict[str, Any]]) -> list[AuditEvent]:
    """Record several events at once, in the caller's transaction (or its own), with one INSERT.

    With the sealer (``chain_mode() == "sealer"``) the events are stored as pending, without any
    lock, and join the chain when the sealer next runs (``audit.sealer``): the returned events
    carry no id or hash yet. Inline, they are chained here under the chain lock and returned with
    their ids and hashes.

    Timestamps never go backwards along the chain: an event stamped (or given a ``ts``) earlier
    than the last chained one takes the last one's time when it is chained. That keeps ``ts``
    ordered like ``id``, which is what lets time filters be answered as id ranges.
    """
    rows = _normalise(items, timezone.now())
    if not rows:
        return []
    if chain_mode() == "sealer":
        return _record_pending(rows)
    started = time.perf_counter()
    with transaction.atomic():
        prev, last_ts = _lock_chain()
        events = chain_events(rows, prev, last_ts)
        _insert(events)
        _count(events, time.perf_counter() - started)
        transaction.on_commit(lambda: _after_commit(events))
    return events


def audit_pending_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """For a writer that stores its events in a statement of its own (intake's one INSERT for its
    jobs and events): the events checked and in stored form, as ``AuditPending`` column values,
    when they join the chain through the sealer here; None when they are chained inline, and the
    writer must call ``audit_record_many`` instead.

    The writer inserts exactly these rows into ``AuditPending`` in its transaction, then calls
    ``audit_pending_stored``. Keys other than the columns (``_job`` in intake's events) are
    dropped.
    """
    if chain_mode() != "sealer":
        return None
    return _normalise(items, timezone.now())


def audit_pending_stored(rows: list[dict[str, Any]]) -> None:
    """Say that ``rows`` (from ``audit_pending_rows``) were inserted in the current transaction:
    the sealer is woken when it commits."""
    if rows:
        for hook in _pending_hooks:
            transaction.on_commit(hook)


def _record_pending(rows: list[dict[str, Any]]) -> list[AuditEvent]:
    # One INSERT, no lock, no counter row touched: concurrent writers never wait on each other.
    if connection.vendor == "postgresql":
        rs = pgbulk.recordset(AuditPending)
        table = connection.ops.quote_name(AuditPending._meta.db_table)
        pgbulk.fetch(
            f"INSERT INTO {table} ({rs.names}) SELECT {rs.select} "  # noqa: S608  # nosec B608: quoted names only
            f"FROM json_to_recordset(%s::json) AS r({rs.definition}) ORDER BY r.{pgbulk.ORD} RETURNING NULL",
            [pgbulk.json_rows(rs.full_rows(rows))],
        )
    else:
        AuditPending.objects.bulk_create([AuditPending(**row) for row in rows])
    for hook in _pending_hooks:
        transaction.on_commit(hook)
    return [AuditEvent(**row) for row in rows]


def chain_events(rows: list[dict[str, Any]], prev: str, last_ts: datetime | None) -> list[AuditEvent]:
    """Build chained (not yet inserted) events from stored-form rows, after ``prev``/``last_ts``."""
    events = []
    for row in rows:
        ts = row["ts"]
        if last_ts is not None and ts < last_ts:
            ts = last_ts
        last_ts = ts
        fields = {name: row[name] for name in _LIMITS}
        event = AuditEvent(ts=ts, kind=row["kind"], data=row["data"], **fields)
        event.search = search_text(
            alertname=event.alertname, target=event.target, message=event.message, data=event.data
        )
        body = event.body()
        event.prev_hash = prev
        event.hash = prev = body_hash(prev, body)
        # Encoded once here, reused by the INSERT, the JSONL mirror and the live stream.
        event._body_json = dumps_compact(body)
        events.append(event)
    return events


def _rows_json(events: list[AuditEvent]) -> str:
    """The events as ``pgbulk``'s JSON parameter, built from each event's encoded body: the
    hashed fields are not encoded again, only the chain fields and the search text are added."""
    rows = (
        f'{event.body_json()[:-1]},"prev_hash":{dumps_compact(event.prev_hash)},"hash":{dumps_compact(event.hash)},'
        f'"search":{dumps_compact(event.search)},"{pgbulk.ORD}":{n}}}'
        for n, event in enumerate(events)
    )
    return "[" + ",".join(rows) + "]"


def _insert(events: list[AuditEvent]) -> None:
    if connection.vendor == "postgresql":
        # One short prepared statement whatever the batch (autoheal_site.pgbulk): the sealer's
        # inserts were most of its time when Django adapted each value of each event.
        rs = pgbulk.recordset(AuditEvent)
        table = connection.ops.quote_name(AuditEvent._meta.db_table)
        sql = (
            f"INSERT INTO {table} ({rs.names}) SELECT {rs.select} "  # noqa: S608  # nosec B608: quoted names only
            f"FROM json_to_recordset(%s::json) AS r({rs.definition}) ORDER BY r.{pgbulk.ORD} RETURNING id, hash"
        )
        ids = {digest: pk for pk, digest in pgbulk.fetch(sql, [_rows_json(events)])}
        for event in events:
            event.pk = ids[event.hash]
            event._state.adding = False
            event._state.db = connection.alias
        return
    if connection.features.can_return_rows_from_bulk_insert:
        AuditEvent.objects.bulk_create(events)
    else:
        for event in events:
            event.save(force_insert=True)


def _count(events: list[AuditEvent], elapsed: float) -> None:
    metrics.observe_audit_write(events, elapsed)


def _after_commit(events: list[AuditEvent]) -> None:
    mirror.append_many(events)
    publish_committed(events)


def publish_committed(events: list[AuditEvent]) -> None:
    """Run the registered hooks for chained, committed events, in chain order."""
    for hook in _after_commit_batch_hooks:
        try:
            hook(events)
        except Exception:  # a failing subscriber must never break the writer
            logger.exception("audit after-commit hook failed for %d events", len(events))


# --- Export bookkeeping and retention --------------------------------------------------------


def audit_export_record(*, through_id: int, events: int, destination: str) -> AuditExport:
    """Remember that every event up to ``through_id`` has been exported (prune may remove them)."""
    return AuditExport.objects.create(through_id=through_id, events=events, destination=destination[:500])


def exported_through() -> int:
    """The highest id below which every event has been exported (0 if none)."""
    return AuditExport.objects.aggregate(top=Max("through_id"))["top"] or 0


class PruneRefused(Exception):
    """Prune would remove events that no complete export holds."""


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed (or would remove, for a dry run)."""

    cutoff: datetime
    removed: int
    first_id: int | None
    through_id: int | None
    through_ts: datetime | None
    anchor: AuditAnchor | None


def audit_prune(
    *, older_than: timedelta, force: bool = False, dry_run: bool = False, now: datetime | None = None
) -> PruneResult:
    """Remove the oldest events, those recorded before ``now - older_than``.

    Only a prefix of the chain is removed (every event up to the last old one before the first
    event still within retention), and an anchor keeps the last removed hash, so ``audit_verify``
    still checks the rest. Refuses (``PruneRefused``) when an event to remove was never part of a
    complete export, unless ``force``.
    """
    if older_than <= timedelta(0):
        raise ValueError("older_than must be positive")
    cutoff = (now or timezone.now()) - older_than
    with transaction.atomic():
        _lock_chain()
        young_floor = AuditEvent.objects.filter(ts__gte=cutoff).aggregate(low=Min("id"))["low"]
        old = AuditEvent.objects.all() if young_floor is None else AuditEvent.objects.filter(id__lt=young_floor)
        bounds = old.aggregate(low=Min("id"), high=Max("id"))
        through_id = bounds["high"]
        if through_id is None:
            return PruneResult(cutoff, 0, None, None, None, None)
        last = AuditEvent.objects.filter(id=through_id).values_list("hash", "ts").get()
        removed = AuditEvent.objects.filter(id__lte=through_id).count()
        exported = exported_through()
        if through_id > exported and not force:
            raise PruneRefused(
                f"{removed} events up to id {through_id} are older than {iso_utc(cutoff)}, but a complete "
                f"export only covers events up to id {exported}: run audit_export first, or pass --force"
            )
        if dry_run:
            return PruneResult(cutoff, removed, bounds["low"], through_id, last[1], None)
        anchor = AuditAnchor.objects.create(
            through_id=through_id,
            through_hash=last[0],
            through_ts=last[1],
            removed=removed,
            forced=through_id > exported,
        )
        # The one place events are deleted: raw SQL on purpose, past the append-only guards.
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {connection.ops.quote_name(AuditEvent._meta.db_table)} WHERE id <= %s",  # noqa: S608  # nosec B608: only the quoted table name is interpolated
                [through_id],
            )
    return PruneResult(cutoff, removed, bounds["low"], through_id, last[1], anchor)


# --- Import ----------------------------------------------------------------------------------


class AuditImportError(ValueError):
    """A line of an import cannot be accepted; nothing of the import is kept."""


@dataclass(frozen=True)
class ImportResult:
    """How many lines an import read, added, and found already present."""

    read: int
    added: int
    present: int


_IMPORT_BATCH = 1000


def _parse_line(number: int, line: str) -> AuditEvent:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise AuditImportError(f"line {number}: not JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise AuditImportError(f"line {number}: not a JSON object")
    missing = [name for name in ("id", "prev_hash", "hash", *HASHED_FIELDS) if name not in raw]
    if missing:
        raise AuditImportError(f"line {number}: missing {', '.join(missing)}")
    if not isinstance(raw["id"], int) or isinstance(raw["id"], bool) or raw["id"] <= 0:
        raise AuditImportError(f"line {number}: id must be a positive integer")
    if raw["kind"] not in ALL_KINDS:
        raise AuditImportError(f"line {number}: unknown kind {str(raw['kind'])[:40]!r}")
    if not isinstance(raw["data"], dict):
        raise AuditImportError(f"line {number}: data must be a JSON object")
    for name in ("prev_hash", "hash", *_LIMITS):
        if not isinstance(raw[name], str):
            raise AuditImportError(f"line {number}: {name} must be a string")
        if name in _LIMITS and len(raw[name]) > _LIMITS[name]:
            raise AuditImportError(f"line {number}: {name} is longer than {_LIMITS[name]} characters")
    ts = parse_datetime(raw["ts"]) if isinstance(raw["ts"], str) else None
    if ts is None or timezone.is_naive(ts):
        raise AuditImportError(f"line {number}: ts must be an ISO 8601 time with a zone, like 2026-01-31T12:00:00Z")
    body = {name: raw[name] for name in HASHED_FIELDS}
    body["ts"] = iso_utc(ts)
    if body_hash(raw["prev_hash"], body) != raw["hash"]:
        raise AuditImportError(f"line {number}: hash does not match the event's content (event id {raw['id']})")
    fields = {name: raw[name] for name in _LIMITS}
    event = AuditEvent(
        id=raw["id"], ts=ts, kind=raw["kind"], data=raw["data"], prev_hash=raw["prev_hash"], hash=raw["hash"], **fields
    )
    event.search = search_text(alertname=event.alertname, target=event.target, message=event.message, data=event.data)
    return event


def _batches(lines: Iterable[str]) -> Iterator[list[tuple[int, AuditEvent]]]:
    batch: list[tuple[int, AuditEvent]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        batch.append((number, _parse_line(number, line)))
        if len(batch) >= _IMPORT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def audit_import(*, lines: Iterable[str]) -> ImportResult:
    """Restore exported events (JSONL of ``audit_export``) with their ids and hashes.

    Idempotent: an event already present with the same hash is skipped. All or nothing: a bad
    line, an id present with different content, or timestamps that would go backwards along the
    ids raise ``AuditImportError`` and the whole import is rolled back. Restored events are history,
    not news: they are not appended to the JSONL mirror nor published to the live stream.
    """
    read = added = present = 0
    low: int | None = None
    high: int | None = None
    with transaction.atomic():
        _lock_chain()
        for batch in _batches(lines):
            read += len(batch)
            ids = [event.id for _, event in batch]
            existing = dict(AuditEvent.objects.filter(id__in=ids).values_list("id", "hash"))
            fresh: dict[int, AuditEvent] = {}
            for number, event in batch:
                known = existing.get(event.id) or (fresh[event.id].hash if event.id in fresh else None)
                if known is None:
                    fresh[event.id] = event
                elif known == event.hash:
                    present += 1
                else:
                    raise AuditImportError(f"line {number}: event id {event.id} already exists with different content")
            if fresh:
                AuditEvent.objects.bulk_create(list(fresh.values()))
                added += len(fresh)
                low = min(low or min(fresh), min(fresh))
                high = max(high or 0, max(fresh))
        if low is not None and high is not None:
            _check_time_order(low, high)
            _reset_sequence()
    return ImportResult(read=read, added=added, present=present)


def _check_time_order(low: int, high: int) -> None:
    """Refuse an import that would make timestamps go backwards along the ids."""
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with connection.cursor() as cursor:
        # Include the neighbours just outside the imported range: they must agree too.
        cursor.execute(
            f"SELECT id FROM (SELECT id, ts, LAG(ts) OVER (ORDER BY id) AS before FROM {table} "  # noqa: S608  # nosec B608: only the quoted table name
            f"WHERE id >= COALESCE((SELECT MAX(id) FROM {table} WHERE id < %s), %s) "
            f"AND id <= COALESCE((SELECT MIN(id) FROM {table} WHERE id > %s), %s)) AS ordered "
            "WHERE ts < before ORDER BY id LIMIT 1",
            [low, low, high, high],
        )
        row = cursor.fetchone()
    if row is not None:
        raise AuditImportError(
            f"event id {row[0]} is older than the event before it: the trail's timestamps must not go backwards"
        )


def _reset_sequence() -> None:
    """Move the id sequence past imported ids so new events never collide with them."""
    statements = connection.ops.sequence_reset_sql(no_style(), [AuditEvent])
    if statements:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
