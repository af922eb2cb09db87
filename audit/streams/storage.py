"""The live stream's reads of the audit table, and django-eventstream's storage and channel manager.

The audit table is the stream's storage: :class:`AuditStorage` (``EVENTSTREAM_STORAGE_CLASS``)
replays straight from it, with no second copy, and :class:`AuditChannelManager`
(``EVENTSTREAM_CHANNELMANAGER_CLASS``) lets only ops and admin read. The reads run on the stream's
own threads (:func:`db_read`, :func:`feed_db_read`), never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.http import HttpRequest
from django_eventstream.channelmanager import ChannelManagerBase
from django_eventstream.event import Event
from django_eventstream.storage import EventDoesNotExist, StorageBase
from django_eventstream.utils import get_storage

from accounts.roles import is_ops
from audit.models import AuditEvent
from audit.streams.frames import CHANNEL, EVENT_TYPE, StreamFilter, StreamItem, stream_item

READ_PAGE = 500

T = TypeVar("T")


# The columns of ``AuditEvent.as_dict()``: the hash and search columns never leave the database.
EVENT_FIELDS = ("id", "ts", "kind", "alertname", "fingerprint", "policy", "target", "message", "actor", "data")


def filtered_events(stream_filter: StreamFilter | None) -> Any:
    events = AuditEvent.objects.only(*EVENT_FIELDS)
    if stream_filter is not None:
        if stream_filter.kinds:
            events = events.filter(kind__in=sorted(stream_filter.kinds))
        if stream_filter.alertname:
            events = events.filter(alertname=stream_filter.alertname)
    return events


class AuditStorage(StorageBase):
    """django-eventstream storage over the audit table: the audit id is the event id.

    Nothing is copied: replay reads the table. The replay window is what the table still holds,
    at most ``AUTOHEAL_STREAM_REPLAY_MAX`` events back; outside it ``EventDoesNotExist`` (the
    library's signal for ``stream-reset``) carries the current id.
    """

    def append_event(self, channel: str, event_type: str, data: Any) -> Event:
        raise TypeError("audit events are written by audit.services.audit_record, not through the stream")

    def get_current_id(self, channel: str) -> int:
        return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def in_window(self, last_id: int) -> bool:
        """True when every event after ``last_id`` is still in the table and within reach."""
        ids = AuditEvent.objects.order_by("id").values_list("id", flat=True)
        if last_id > (ids.last() or 0):
            return False  # an id this trail never handed out (another database, a restore)
        oldest = ids.first()
        # Pruning removes the oldest events, a prefix of the ids: if nothing older than the one
        # after ``last_id`` is gone, everything after ``last_id`` is still here.
        if oldest is not None and oldest > last_id + 1:
            return False
        limit = settings.AUTOHEAL_STREAM_REPLAY_MAX
        return not ids.filter(id__gt=last_id)[limit : limit + 1].exists()

    def get_events(
        self, channel: str, last_id: int, limit: int = 100, stream_filter: StreamFilter | None = None
    ) -> list[Event]:
        """Events after ``last_id`` (matching the filter), oldest first, at most ``limit``."""
        if not self.in_window(last_id):
            raise EventDoesNotExist(f"event {last_id} is outside the replay window", self.get_current_id(channel))
        rows = filtered_events(stream_filter).filter(id__gt=last_id).order_by("id")[:limit]
        return [Event(channel, EVENT_TYPE, row.as_dict(), id=row.id) for row in rows]


class AuditChannelManager(ChannelManagerBase):
    """One channel, ``audit``, readable by the ops and admin roles only."""

    def get_channels_for_request(self, request: HttpRequest, view_kwargs: dict[str, Any]) -> set[str]:
        return {CHANNEL}

    def can_read_channel(self, user: Any, channel: str) -> bool:
        return channel == CHANNEL and user is not None and is_ops(user)

    def is_channel_reliable(self, channel: str) -> bool:
        return True


def audit_storage() -> AuditStorage:
    """The configured django-eventstream storage, which must be the audit table's."""
    storage = get_storage()
    if not isinstance(storage, AuditStorage):
        raise TypeError("EVENTSTREAM_STORAGE_CLASS must be audit.streams.storage.AuditStorage")
    return storage


# Reads for the stream run on dedicated threads, never on the event loop and never on the thread
# Django keeps for synchronous middleware, so a slow read cannot stall requests. Client catch-ups
# (rare: reconnects, slow clients) share a few threads and connect per read, as requests do; the
# feed, which reads whenever a doorbell shows a gap, keeps one connection on its own thread so a
# read costs a query, not a connection set-up, while events are waiting to go out.
_db_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="audit-stream-db")
_feed_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-stream-feed")


async def db_read(func: Callable[..., T], *args: Any) -> T:
    def run() -> T:
        # Honour CONN_MAX_AGE as a request would, and drop a connection the database closed.
        close_old_connections()
        try:
            return func(*args)
        finally:
            close_old_connections()

    return await asyncio.get_running_loop().run_in_executor(_db_threads, run)


async def feed_db_read(func: Callable[..., T], *args: Any) -> T:
    def run() -> T:
        try:
            return func(*args)
        except (OperationalError, InterfaceError):
            connection.close()  # reconnect on the next read (the database restarted, say)
            raise

    return await asyncio.get_running_loop().run_in_executor(_feed_thread, run)


def items_after(last_id: int, stream_filter: StreamFilter | None, limit: int) -> list[StreamItem]:
    return [stream_item(e.data) for e in audit_storage().get_events(CHANNEL, last_id, limit, stream_filter)]


def current_id() -> int:
    return audit_storage().get_current_id(CHANNEL)


def feed_items_after(last_id: int, limit: int) -> list[StreamItem]:
    rows = filtered_events(None).filter(id__gt=last_id).order_by("id")[:limit]
    return [stream_item(row.as_dict()) for row in rows]


def stream_backlog(*, limit: int, stream_filter: StreamFilter) -> tuple[list[dict[str, Any]], int]:
    """What a page shows before its stream starts: the newest ``limit`` matching events (newest
    first) and the id to start the stream after, which is the newest event of all (not just the
    newest match) so that a rare filter never resumes from far back."""
    through = audit_storage().get_current_id(CHANNEL)
    rows = filtered_events(stream_filter).filter(id__lte=through).order_by("-id")[:limit]
    return [row.as_dict() for row in rows], through
