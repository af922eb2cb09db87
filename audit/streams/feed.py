"""The per-process feed: committed audit events, in strict id order, to this process's clients.

Doorbells (a Redis message, or an in-process hand-over) say an event was committed; the feed
delivers the next id straight from the message and reads anything else (a gap, a lost or late
message, Redis being down) from the audit table. A poll after a quiet spell covers doorbells that
never rang, and under a steady stream events go out in batches (see ``AuditFeed._flush``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import deque
from typing import Any

from django.conf import settings
from django.db import connection

from audit.streams.frames import StreamItem, stream_item
from audit.streams.listener import AuditListener
from audit.streams.storage import READ_PAGE, current_id, feed_db_read, feed_items_after

logger = logging.getLogger(__name__)

# Under a steady stream, events are handed to clients at most this often (seconds); see _flush.
FLUSH_INTERVAL = 0.05


def redis_channel() -> str:
    """The pub/sub channel for this database's audit trail.

    Redis pub/sub ignores the database number, so the name carries the Redis URL's database and
    a digest of the SQL database's name: two deployments (or test runs) sharing a Redis server
    never ring each other's doorbell.
    """
    db_name = str(connection.settings_dict.get("NAME") or "")
    digest = hashlib.sha256(db_name.encode()).hexdigest()[:16]
    redis_db = str(settings.REDIS_URL).rsplit("/", 1)[-1].split("?", 1)[0] or "0"
    return f"autoheal:audit:{redis_db}:{digest}"


class AuditFeed:
    """Per process: committed audit events, in id order, to the listeners of this process.

    Started by the first stream request on the server's event loop (never in ``AppConfig.ready``)
    and bound to that loop; every method but :meth:`notify_threadsafe` runs on it.
    """

    def __init__(self) -> None:
        self.last_id = 0
        self.listeners: set[AuditListener] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: deque[StreamItem] = deque()
        self._bell: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._starting: asyncio.Lock | None = None
        self._outbox: list[StreamItem] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._last_flush = 0.0

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._reset(loop)
        assert self._starting is not None
        async with self._starting:
            if self.running:
                return
            for task in self._tasks:
                task.cancel()
            self._bell = asyncio.Event()
            self._tasks = []
            if settings.REDIS_URL:
                # Subscribe before reading the current id, so nothing committed in between is
                # missed (and if it were, the poll would still find it).
                subscribed = asyncio.Event()
                self._tasks.append(loop.create_task(self._subscribe(subscribed)))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        await subscribed.wait()
            self.last_id = await feed_db_read(current_id)
            self._tasks.append(loop.create_task(self._run()))
            self._tasks.append(loop.create_task(self._keepalive()))

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        self._loop = loop
        self._inbox.clear()
        self._outbox = []
        self._flush_handle = None
        self.listeners = set()
        self._starting = asyncio.Lock()

    def add(self, listener: AuditListener) -> None:
        listener.assign_loop()
        self.listeners.add(listener)

    def remove(self, listener: AuditListener) -> None:
        self.listeners.discard(listener)

    def notify_threadsafe(self, event: dict[str, Any]) -> None:
        """Hand over an event committed in this process (the in-process doorbell)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # no stream has started in this process: nobody here is listening
        item = stream_item(event)  # encoded here, in the writer's thread, not on the event loop
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._push, item)

    def _push(self, item: StreamItem) -> None:
        self._inbox.append(item)
        if self._bell is not None:
            self._bell.set()

    async def _run(self) -> None:
        assert self._bell is not None
        loop = asyncio.get_running_loop()
        poll = settings.AUTOHEAL_STREAM_POLL_SECONDS
        next_poll = loop.time() + poll
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_poll - loop.time())):
                    await self._bell.wait()
            rang = self._bell.is_set()
            self._bell.clear()
            try:
                if await self._advance() or loop.time() >= next_poll:
                    await self._catch_up()
                # The poll finds what no doorbell announced (Redis down, a message lost, a writer
                # that could not publish). While doorbells ring it is not needed: a missed one
                # shows up as a gap at the next. So it runs only after a quiet spell, and never
                # holds up a steady stream.
                if rang or loop.time() >= next_poll:
                    next_poll = loop.time() + poll
            except Exception:
                logger.exception("the audit stream could not read new events; retrying")
                await asyncio.sleep(1)

    async def _keepalive(self) -> None:
        """Every keep-alive period, wake the clients that were sent nothing during it."""
        while True:
            await asyncio.sleep(settings.AUTOHEAL_STREAM_KEEPALIVE_SECONDS)
            for listener in list(self.listeners):
                if listener.active:
                    listener.active = False
                else:
                    listener.keepalive_due = True
                    listener.aevent.set()

    async def _advance(self) -> bool:
        """Deliver what the doorbells announced, in id order; True when a gap needs a read."""
        gap = False
        while self._inbox:
            item = self._inbox.popleft()
            if item.id <= self.last_id:
                continue  # already delivered through a read
            if item.id == self.last_id + 1 and not gap:
                self._deliver([item])
                continue
            # A gap: a rolled-back id, or an earlier event whose doorbell has not rung (yet).
            # The read that follows covers this item and everything queued after it.
            gap = True
        return gap

    async def _catch_up(self) -> None:
        while True:
            items = await feed_db_read(feed_items_after, self.last_id, READ_PAGE)
            if items:
                self._deliver([i for i in items if i.id > self.last_id])
            if len(items) < READ_PAGE:
                return

    def _deliver(self, items: list[StreamItem]) -> None:
        if not items:
            return
        self.last_id = max(self.last_id, items[-1].id)
        self._outbox.extend(items)
        if self._flush_handle is not None:
            return  # a flush is due shortly and will take these along
        assert self._loop is not None
        due = self._last_flush + FLUSH_INTERVAL
        if self._loop.time() >= due:
            self._flush()
        else:
            self._flush_handle = self._loop.call_at(due, self._flush)

    def _flush(self) -> None:
        """Hand the waiting events to every listener at once.

        Waking every client costs a task switch and a socket write per client, whatever the number
        of events: under a steady stream, events are handed over at most every ``FLUSH_INTERVAL``
        so each write carries a few of them. A lone event after a quiet spell goes out at once.
        """
        assert self._loop is not None
        self._flush_handle = None
        self._last_flush = self._loop.time()
        items, self._outbox = self._outbox, []
        for listener in list(self.listeners):
            listener.offer(items)

    async def _subscribe(self, subscribed: asyncio.Event) -> None:
        import redis.asyncio as aioredis

        while True:
            client = aioredis.Redis.from_url(settings.REDIS_URL)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(redis_channel())
                subscribed.set()
                if self._bell is not None:
                    self._bell.set()  # catch up on anything committed while unsubscribed
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        body = json.loads(message["data"])
                        # {"events": [...]} (several, in chain order), or {"event": {...}}.
                        items = [stream_item(event) for event in body.get("events") or [body["event"]]]
                    except (ValueError, KeyError, TypeError, AttributeError):
                        logger.warning("ignored a malformed message on the audit stream channel")
                        continue
                    for item in items:
                        self._push(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("audit stream lost its Redis subscription (%s); polling until it is back", exc)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()


feed = AuditFeed()
