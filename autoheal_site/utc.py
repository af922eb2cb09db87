"""The one way a time is written out: UTC ISO 8601 with a ``Z`` (API, JSONL, hashes, payloads)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def iso_utc(ts: datetime) -> str: ...
@overload
def iso_utc(ts: None) -> None: ...
def iso_utc(ts: datetime | None) -> str | None:
    """``2026-12-03T08:00:00.123456Z`` for an aware datetime; None stays None."""
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
