"""The live stream of the audit trail: ``GET /events`` as Server-Sent Events.

Each committed audit event goes out as ``id: <audit id>`` / ``event: audit`` / ``data: <event
JSON>``; a client that reconnects with ``Last-Event-ID`` gets exactly the events it missed.

How it holds together (the reasons matter more than the code):

* The audit table is the bus; pub/sub is only the doorbell. ``audit_record`` takes a chain lock
  that is held until commit, so audit ids are handed out in commit order: once event N is
  visible, every event below N that will ever exist is visible too. Reading ``id > last`` from the
  table therefore never skips anything, and a gap in the ids is a rolled-back write, nothing more.
* After commit, the writer (web or worker process) rings the doorbell: a Redis publish when
  ``REDIS_URL`` is set, a direct in-process hand-over otherwise. Each web process runs one
  :class:`AuditFeed` that turns doorbells into deliveries in strict id order: the next id is
  taken from the message itself, anything else (a gap, a message from another process that
  overtook an earlier one, a lost message, Redis being down) is read from the table. A cheap poll
  after ``AUTOHEAL_STREAM_POLL_SECONDS`` without a doorbell covers doorbells that never rang.
  Under a steady stream, events are handed to the clients in batches at most every 50 ms, so the
  per-client cost (a task switch and a socket write) does not grow with the event rate.
* Each client has a bounded queue of shared, pre-encoded frames. A client that falls behind
  (django-eventstream issue #160: its own queue holds 10 events and then drops them silently) is
  never skipped: the queue is dropped and the client catches up from the audit table from the
  last id it was sent. A client further behind than the replay window, or resuming from an id
  that is no longer in the table, is told so with a ``stream-reset`` and continues live.

django-eventstream supplies the pieces that fit: the storage interface (:class:`AuditStorage`,
configured as ``EVENTSTREAM_STORAGE_CLASS``: replay straight from the audit table, no second copy),
the channel manager (:class:`AuditChannelManager`, ``EVENTSTREAM_CHANNELMANAGER_CLASS``: only ops
and admin may read; the library's default lets anyone), its ``Listener`` (a client's wake-up
event), the SSE encoders and its conventions (``stream-open`` with padding, ``keep-alive``,
``stream-reset``, ``stream-error`` with id ``error``). Its own view is not used: it writes ids as
``channel:id`` (the contract is the bare audit id), encodes every event once per client, drops
events past 10 per client, can resend events when one arrives during its initial read, and its
Redis listener hands events over in arrival order and is not restarted if Redis goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET
from django_eventstream.channelmanager import ChannelManagerBase
from django_eventstream.event import Event
from django_eventstream.storage import EventDoesNotExist, StorageBase
from django_eventstream.utils import add_default_headers, get_channelmanager, get_storage, sse_encode_error
from django_eventstream.views import Listener

from accounts.roles import is_ops
from audit.models import ALL_KINDS, AuditEvent

logger = logging.getLogger(__name__)

CHANNEL = "audit"
EVENT_TYPE = "audit"
# The library's first frame: 2 KiB of padding so old proxies and browsers start delivering.
OPEN_FRAME = (":" + " " * 2048 + "\n\nevent: stream-open\ndata:\n\n").encode()
KEEPALIVE_FRAME = b"event: keep-alive\ndata:\n\n"
READ_PAGE = 500
# Under a steady stream, events are handed to clients at most this often (seconds); see _flush.
FLUSH_INTERVAL = 0.05
ALERTNAME_MAX = 200

T = TypeVar("T")


# --- Frames and filters ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One committed audit event, encoded once as an SSE frame and shared by every client."""

    id: int
    kind: str
    alertname: str
    frame: bytes


def stream_item(event: dict[str, Any]) -> StreamItem:
    """Encode an event (``AuditEvent.as_dict()``) as the contract's SSE frame."""
    # json.dumps escapes CR and LF inside strings, so the data always fits on one line.
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)
    frame = f"id: {int(event['id'])}\nevent: {EVENT_TYPE}\ndata: {data}\n\n".encode()
    return StreamItem(int(event["id"]), str(event.get("kind", "")), str(event.get("alertname", "")), frame)


class StreamRequestError(ValueError):
    """A bad query parameter or header; the message names it."""


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Server-side filters: ``kind`` (any of these; empty means all) and an exact ``alertname``."""

    kinds: frozenset[str] = frozenset()
    alertname: str = ""

    @classmethod
    def parse(cls, *, kind: str | None, alertname: str | None) -> StreamFilter:
        """Parse the query parameters; raise :class:`StreamRequestError` naming a bad one."""
        kinds = frozenset(k.strip() for k in (kind or "").split(",") if k.strip())
        unknown = sorted(kinds - set(ALL_KINDS))
        if unknown:
            raise StreamRequestError(f"kind: unknown audit kind {unknown[0]!r}")
        name = (alertname or "").strip()
        if len(name) > ALERTNAME_MAX:
            raise StreamRequestError(f"alertname: longer than {ALERTNAME_MAX} characters")
        return cls(kinds, name)

    def matches(self, kind: str, alertname: str) -> bool:
        if self.kinds and kind not in self.kinds:
            return False
        return not self.alertname or alertname == self.alertname

    def as_query(self) -> dict[str, str]:
        query = {}
        if self.kinds:
            query["kind"] = ",".join(sorted(self.kinds))
        if self.alertname:
            query["alertname"] = self.alertname
        return query


def parse_last_event_id(header: str | None, param: str | None) -> int | None:
    """The position to resume after: the ``Last-Event-ID`` header, else ``lastEventId``.

    Browsers send the header when they reconnect by themselves; the query parameter is how a page
    that rendered events first says where its stream should start.
    """
    raw = (header or "").strip() or (param or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise StreamRequestError("Last-Event-ID: must be an audit event id (a non-negative integer)")
    return int(raw)


# --- Storage and channels (django-eventstream's interfaces) -----------------------------------


# The columns of ``AuditEvent.as_dict()``: the hash and search columns never leave the database.
EVENT_FIELDS = ("id", "ts", "kind", "alertname", "fingerprint", "policy", "target", "message", "actor", "data")


def _filtered(stream_filter: StreamFilter | None) -> Any:
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
        rows = _filtered(stream_filter).filter(id__gt=last_id).order_by("id")[:limit]
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
        raise TypeError("EVENTSTREAM_STORAGE_CLASS must be audit.streams.AuditStorage")
    return storage


# Reads for the stream run on dedicated threads, never on the event loop and never on the thread
# Django keeps for synchronous middleware, so a slow read cannot stall requests. Client catch-ups
# (rare: reconnects, slow clients) share a few threads and connect per read, as requests do; the
# feed, which reads whenever a doorbell shows a gap, keeps one connection on its own thread so a
# read costs a query, not a connection set-up, while events are waiting to go out.
_db_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="audit-stream-db")
_feed_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-stream-feed")


async def _db(func: Callable[..., T], *args: Any) -> T:
    def run() -> T:
        # Honour CONN_MAX_AGE as a request would, and drop a connection the database closed.
        close_old_connections()
        try:
            return func(*args)
        finally:
            close_old_connections()

    return await asyncio.get_running_loop().run_in_executor(_db_threads, run)


async def _feed_db(func: Callable[..., T], *args: Any) -> T:
    def run() -> T:
        try:
            return func(*args)
        except (OperationalError, InterfaceError):
            connection.close()  # reconnect on the next read (the database restarted, say)
            raise

    return await asyncio.get_running_loop().run_in_executor(_feed_thread, run)


def _items_after(last_id: int, stream_filter: StreamFilter | None, limit: int) -> list[StreamItem]:
    return [stream_item(e.data) for e in audit_storage().get_events(CHANNEL, last_id, limit, stream_filter)]


def _current_id() -> int:
    return audit_storage().get_current_id(CHANNEL)


def _feed_items_after(last_id: int, limit: int) -> list[StreamItem]:
    rows = _filtered(None).filter(id__gt=last_id).order_by("id")[:limit]
    return [stream_item(row.as_dict()) for row in rows]


# --- Publishing (runs in whichever process committed the event) -------------------------------


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


_publisher_lock = threading.Lock()
_publisher: Any = None


def _redis_publisher() -> Any:
    global _publisher
    with _publisher_lock:
        if _publisher is None:
            import redis

            # Short timeouts: this runs in the writer right after its commit; if Redis is slow the
            # web processes' poll delivers the event anyway.
            _publisher = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
        return _publisher


def stream_publish(event: AuditEvent) -> None:
    """After-commit hook: ring the stream's doorbell for one committed audit event.

    Registered with ``audit.services.register_after_commit``, so it never runs for a transaction
    that rolled back. Failures are logged and swallowed: the event is in the table, and every web
    process polls the table, so a lost doorbell delays an event but never loses it.
    """
    payload = event.as_dict()
    if settings.REDIS_URL:
        try:
            message = json.dumps({"event": payload}, ensure_ascii=False, separators=(",", ":"), default=str)
            _redis_publisher().publish(redis_channel(), message)
        except Exception:
            logger.warning("could not publish audit event %s to Redis; the stream will poll for it", event.id)
        return
    feed.notify_threadsafe(payload)


# --- The per-process feed ---------------------------------------------------------------------


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
            self.last_id = await _feed_db(_current_id)
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
            items = await _feed_db(_feed_items_after, self.last_id, READ_PAGE)
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
                        item = stream_item(json.loads(message["data"])["event"])
                    except (ValueError, KeyError, TypeError):
                        logger.warning("ignored a malformed message on the audit stream channel")
                        continue
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


# --- The view ---------------------------------------------------------------------------------


def _stream_reset(current_id: int, reason: str) -> bytes:
    data = json.dumps({"channels": [CHANNEL], "reason": reason, "last_id": current_id})
    return f"id: {current_id}\nevent: stream-reset\ndata: {data}\n\n".encode()


async def _stream(listener: AuditListener, resume_from: int | None) -> AsyncIterator[bytes]:
    """One client's stream: catch up from the table when needed, then follow the feed."""
    await feed.start()
    feed.add(listener)  # from here on every new event is queued for this client
    try:
        yield OPEN_FRAME
        position = feed.last_id if resume_from is None else resume_from
        catch_up = resume_from is not None
        while True:
            if catch_up:
                catch_up = False
                try:
                    items = await _db(_items_after, position, listener.filter, READ_PAGE)
                except EventDoesNotExist as exc:
                    # Outside the replay window: the client must reload; the stream goes on live.
                    # Whatever is queued past this point is still delivered below.
                    position = max(int(exc.current_id), feed.last_id)
                    yield _stream_reset(position, "the events after Last-Event-ID are no longer available")
                    continue
                if items:
                    position = items[-1].id
                    listener.active = True
                    yield b"".join(i.frame for i in items)
                if len(items) == READ_PAGE:
                    catch_up = True
                    continue
            queued, overflow = listener.take()
            # The queue may repeat what the catch-up already read: ids are the dedupe.
            fresh = [i for i in queued if i.id > position]
            if fresh:
                position = fresh[-1].id
                listener.active = True
                yield b"".join(i.frame for i in fresh)
            if overflow:
                logger.info("stream client %s fell behind; catching up from the audit", id(listener))
                catch_up = True
                continue
            if listener.keepalive_due:
                listener.keepalive_due = False
                yield KEEPALIVE_FRAME
            # No timeout here: a timer per wait per client is hundreds of thousands of timer
            # objects a minute, and the garbage collector's pauses grow with them. The feed's one
            # keep-alive tick wakes the idle clients instead.
            await listener.aevent.wait()
    finally:
        feed.remove(listener)


SETUP_CONCURRENCY = 8
_setup_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _setup_gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _setup_gates.get(loop)
    if gate is None:
        gate = _setup_gates[loop] = asyncio.Semaphore(SETUP_CONCURRENCY)
    return gate


def _close_request_connection() -> None:
    connection.close()


def _refusal(status: int, condition: str, text: str) -> HttpResponse:
    response = HttpResponse(sse_encode_error(condition, text), status=status, content_type="text/event-stream")
    return response


@require_GET
async def events_view(request: HttpRequest) -> HttpResponseBase:
    """``GET /events``: the audit trail, live, for the ops and admin roles."""
    # Django keeps a request's database connection open until its response ends, which for a
    # stream is hours: a few hundred consoles would hold every connection PostgreSQL allows. So the
    # few queries that authorise a stream run a few at a time (a reconnect storm after a restart
    # cannot open hundreds of connections at once) and the connection is handed back before
    # streaming; the stream reads through its own short-lived connections.
    async with _setup_gate():
        try:
            user = await request.auser()
            allowed = user.is_authenticated and await sync_to_async(get_channelmanager().can_read_channel)(
                user, CHANNEL
            )
        finally:
            await sync_to_async(_close_request_connection)()
    if not user.is_authenticated:
        response = _refusal(401, "unauthorized", "Log in with the ops or admin role to read the stream.")
        add_default_headers(response, request=request)
        return response
    if not allowed:
        response = _refusal(403, "forbidden", "Reading the stream needs the ops or admin role.")
        add_default_headers(response, request=request)
        return response
    try:
        stream_filter = StreamFilter.parse(kind=request.GET.get("kind"), alertname=request.GET.get("alertname"))
        resume_from = parse_last_event_id(request.headers.get("Last-Event-ID"), request.GET.get("lastEventId"))
    except StreamRequestError as exc:
        response = _refusal(400, "bad-request", str(exc))
        add_default_headers(response, request=request)
        return response
    listener = AuditListener(
        user_id=user.pk, stream_filter=stream_filter, max_pending=settings.AUTOHEAL_STREAM_MAX_PENDING
    )
    stream = StreamingHttpResponse(_stream(listener, resume_from), content_type="text/event-stream")
    add_default_headers(stream, request=request)
    return stream


def stream_backlog(*, limit: int, stream_filter: StreamFilter) -> tuple[list[dict[str, Any]], int]:
    """What a page shows before its stream starts: the newest ``limit`` matching events (newest
    first) and the id to start the stream after, which is the newest event of all (not just the
    newest match) so that a rare filter never resumes from far back."""
    through = audit_storage().get_current_id(CHANNEL)
    rows = _filtered(stream_filter).filter(id__lte=through).order_by("-id")[:limit]
    return [row.as_dict() for row in rows], through
