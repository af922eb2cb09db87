"""Metrics derived from audit writes.

Both functions store into the shared series of the ``observability`` app, so every web and worker
process adds to the same numbers and they survive restarts; ``/metrics`` reads them at scrape time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audit.models import AuditEvent


def observe_audit_write(events: Sequence[AuditEvent], elapsed: float) -> None:
    """Count the events by kind and observe the write latency.

    Runs inside the audit transaction (one upsert for the whole batch), so the numbers move if and
    only if the events commit.
    """
    from observability.series import audit_deltas
    from observability.services import series_add

    series_add(deltas=audit_deltas(events, elapsed))


def count_webhook_request(code: int) -> None:
    """Count one answer of POST /alert by HTTP status (autoheal_webhook_requests_total{code})."""
    from observability.services import webhook_request_count

    webhook_request_count(code=code)
