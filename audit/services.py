"""The one writer of the audit trail.

``audit_record`` writes the row in the caller's transaction, chains its hash to the previous event,
counts it in the metrics, and, only after the transaction commits, appends it to the JSONL mirror
and publishes it to the live stream. An event whose transaction rolls back leaves no trace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit import mirror
from audit.models import ALL_KINDS, AuditEvent

logger = logging.getLogger(__name__)

# A fixed key for PostgreSQL's transaction-scoped advisory lock that serialises chain writers.
_CHAIN_LOCK_KEY = 0x4175646974  # "Audit"
GENESIS_HASH = "0" * 64

# Called after commit with each committed event; the stream and metrics modules register here.
_after_commit_hooks: list[Callable[[AuditEvent], None]] = []


def register_after_commit(hook: Callable[[AuditEvent], None]) -> None:
    """Register a callable run for every committed event (SSE publish, mirror)."""
    if hook not in _after_commit_hooks:
        _after_commit_hooks.append(hook)


def event_hash(prev_hash: str, event: AuditEvent) -> str:
    """The chained hash: SHA-256 over the previous hash and the event's canonical JSON."""
    # The id is left out so the hash can be sealed before the INSERT; order is still protected
    # because each event names its predecessor's hash and audit_verify walks the ids in order.
    body = event.as_dict()
    body.pop("id", None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _lock_chain() -> str:
    """Take the chain lock for this transaction and return the last event's hash."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])
    # SQLite transactions here are BEGIN IMMEDIATE: writers are already serialised.
    last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
    return last or GENESIS_HASH


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


def audit_record_many(items: list[dict[str, Any]]) -> list[AuditEvent]:
    """Record several events at once: one chain lock and one INSERT for the lot."""
    for item in items:
        if item["kind"] not in ALL_KINDS:
            raise ValueError(f"unknown audit kind: {item['kind']!r}")
    started = time.perf_counter()
    with transaction.atomic():
        prev = _lock_chain()
        now = timezone.now()
        events = []
        for item in items:
            event = AuditEvent(
                ts=item.get("ts") or now,
                kind=item["kind"],
                message=(item.get("message") or "")[:10000],
                alertname=(item.get("alertname") or "")[:200],
                fingerprint=(item.get("fingerprint") or "")[:64],
                policy=(item.get("policy") or "")[:100],
                target=(item.get("target") or "")[:255],
                actor=(item.get("actor") or "")[:150],
                data=item.get("data") or {},
            )
            event.prev_hash = prev
            event.hash = event_hash(prev, event)
            prev = event.hash
            events.append(event)
        _insert(events)
        elapsed = time.perf_counter() - started
        _count(events, elapsed)
        transaction.on_commit(lambda: _after_commit(events))
    return events


def _insert(events: list[AuditEvent]) -> None:
    if connection.features.can_return_rows_from_bulk_insert:
        AuditEvent.objects.bulk_create(events)
    else:
        for event in events:
            event.save(force_insert=True)


def _count(events: list[AuditEvent], elapsed: float) -> None:
    from audit import metrics

    metrics.observe_audit_write(events, elapsed)


def _after_commit(events: list[AuditEvent]) -> None:
    for event in events:
        mirror.append(event)
        for hook in _after_commit_hooks:
            try:
                hook(event)
            except Exception:  # a failing subscriber must never break the writer
                logger.exception("audit after-commit hook failed for event %s", event.id)
