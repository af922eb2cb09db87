"""One connected client of the live stream: its filter, its position and its bounded queue.

A client that falls behind is never skipped: past ``max_pending`` its queue is dropped and it
catches up from the audit table by itself, from the last id it was sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django_eventstream.views import Listener

from audit.streams.frames import CHANNEL, StreamFilter, StreamItem


class AuditListener(Listener):
    """One connected client: its filter, its position and its queue of frames to send."""

    def __init__(self, *, user_id: Any, stream_filter: StreamFilter, max_pending: int) -> None:
        super().__init__()
        self.user_id = user_id
        self.channels = {CHANNEL}
        self.filter = stream_filter
        self.max_pending = max_pending
        self.pending: list[StreamItem] = []
        self.overflow: bool = False
        self.active = True  # something was sent since the feed's last keep-alive tick
        self.keepalive_due = False

    def offer(self, items: Iterable[StreamItem]) -> None:
        """Queue the matching items; past ``max_pending`` drop the queue and flag the overflow."""
        queued = False
        for item in items:
            if not self.filter.matches(item.kind, item.alertname):
                continue
            if self.overflow:
                continue
            if len(self.pending) >= self.max_pending:
                # Everything from here on is re-read from the audit table by the client itself.
                self.overflow = True
                self.pending.clear()
            else:
                self.pending.append(item)
            queued = True
        if queued:
            self.aevent.set()

    def take(self) -> tuple[list[StreamItem], bool]:
        items, overflow = self.pending, self.overflow
        self.pending = []
        self.overflow = False
        self.aevent.clear()
        return items, overflow
