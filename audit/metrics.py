"""Metrics derived from audit writes. Filled in by the observability work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audit.models import AuditEvent


def observe_audit_write(events: Sequence[AuditEvent], elapsed: float) -> None:
    """Count the events by kind and observe the write latency."""


def count_webhook_request(code: int) -> None:
    """Count one answer of POST /alert by HTTP status (autoheal_webhook_requests_total{code})."""
