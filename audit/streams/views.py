"""``GET /events``: who may open the stream, and one client's stream from catch-up to live.

The view authorises with a few queries run a few at a time, hands its database connection back
before streaming, and answers a refused or malformed request with an SSE ``stream-error``. While
the stream runs, its credential is checked again every ``AUTOHEAL_STREAM_RECHECK_SECONDS`` and
each user may hold ``AUTOHEAL_STREAM_MAX_PER_USER`` streams (audit/streams/access.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET
from django_eventstream.storage import EventDoesNotExist
from django_eventstream.utils import add_default_headers, get_channelmanager, sse_encode_error

from audit.streams.access import Credential, StreamSlot
from audit.streams.feed import feed
from audit.streams.frames import (
    CHANNEL,
    KEEPALIVE_FRAME,
    OPEN_FRAME,
    StreamFilter,
    StreamRequestError,
    parse_last_event_id,
)
from audit.streams.listener import AuditListener
from audit.streams.storage import READ_PAGE, db_read, items_after

logger = logging.getLogger(__name__)


def _stream_reset(current_id: int, reason: str) -> bytes:
    data = json.dumps({"channels": [CHANNEL], "reason": reason, "last_id": current_id})
    return f"id: {current_id}\nevent: stream-reset\ndata: {data}\n\n".encode()


@dataclass
class StreamGuard:
    """What keeps one stream allowed: its credential, re-checked, and its place in the user's cap."""

    credential: Credential
    slot: StreamSlot
    period: float
    next_check: float = 0.0

    def __post_init__(self) -> None:
        self.next_check = time.monotonic() + self.period

    async def still_allowed(self) -> bool:
        """False once the credential no longer holds; checks at most once per period."""
        if time.monotonic() < self.next_check:
            return True
        self.next_check = time.monotonic() + self.period
        async with _setup_gate():
            valid = await sync_to_async(self.credential.still_valid, thread_sensitive=False)()
        if valid:
            await sync_to_async(self.slot.refresh, thread_sensitive=False)()
        return valid

    async def release(self) -> None:
        await sync_to_async(self.slot.release, thread_sensitive=False)()


REVOKED_FRAME = sse_encode_error(
    "unauthorized", "The credential of this stream was revoked or lost its role; log in again."
).encode()


async def _stream(listener: AuditListener, resume_from: int | None, guard: StreamGuard) -> AsyncIterator[bytes]:
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
                    items = await db_read(items_after, position, listener.filter, READ_PAGE)
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
            # Woken at least at every keep-alive tick, which is never longer than the period.
            if not await guard.still_allowed():
                yield REVOKED_FRAME
                return
            # No timeout here: a timer per wait per client is hundreds of thousands of timer
            # objects a minute, and the garbage collector's pauses grow with them. The feed's one
            # keep-alive tick wakes the idle clients instead.
            await listener.aevent.wait()
    finally:
        feed.remove(listener)
        await guard.release()


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
    slot = StreamSlot(user_id=user.pk)
    if not await sync_to_async(slot.acquire, thread_sensitive=False)():
        cap = settings.AUTOHEAL_STREAM_MAX_PER_USER
        response = _refusal(429, "too-many-streams", f"This user already has {cap} streams open; close one first.")
        response["Retry-After"] = str(settings.AUTOHEAL_STREAM_RECHECK_SECONDS)
        add_default_headers(response, request=request)
        return response
    guard = StreamGuard(
        credential=Credential.of(request, user), slot=slot, period=float(settings.AUTOHEAL_STREAM_RECHECK_SECONDS)
    )
    listener = AuditListener(
        user_id=user.pk, stream_filter=stream_filter, max_pending=settings.AUTOHEAL_STREAM_MAX_PENDING
    )
    stream = StreamingHttpResponse(_stream(listener, resume_from, guard), content_type="text/event-stream")
    add_default_headers(stream, request=request)
    return stream
