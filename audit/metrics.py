"""Observers of audit writes: how other apps (metrics) learn of each chained batch.

The trail depends on nobody: an app that derives numbers from the audit trail registers an
observer here (``observability`` does in its ``AppConfig.ready``). Observers run inside the
chaining transaction, so whatever they store moves if and only if the events commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audit.models import AuditEvent

WriteObserver = Callable[["Sequence[AuditEvent]", float], None]

_observers: list[WriteObserver] = []


def register_write_observer(observer: WriteObserver) -> None:
    """Call ``observer(events, elapsed_seconds)`` for every chained batch, in its transaction."""
    if observer not in _observers:
        _observers.append(observer)


def observe_audit_write(events: Sequence[AuditEvent], elapsed: float) -> None:
    """Hand one chained batch and the time it took to every registered observer."""
    for observer in _observers:
        observer(events, elapsed)
