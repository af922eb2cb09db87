"""Ringing the live stream's doorbell; runs in whichever process committed the event.

With ``REDIS_URL`` set the doorbell is a Redis publish that every web process hears; without it
the event is handed straight to this process's feed. Either way the audit table stays the source
of truth: a lost doorbell delays an event, never loses it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings

from audit.models import AuditEvent
from audit.streams.feed import feed, redis_channel

logger = logging.getLogger(__name__)


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


# Events per Redis message (a sealer's batch of 2,000 is ten messages).
MESSAGE_EVENTS = 200


def stream_publish_batch(events: list[AuditEvent]) -> None:
    """After-commit hook: ring the stream's doorbell for a committed batch, in chain order.

    Registered with ``audit.services.register_after_commit_batch``, so it never runs for a
    transaction that rolled back. With Redis, one pipelined round trip carries the batch, up to
    ``MESSAGE_EVENTS`` events a message. Failures are logged and swallowed: the events are in the table, and every web process
    polls the table, so a lost doorbell delays an event but never loses it.
    """
    if not settings.REDIS_URL:
        for event in events:
            feed.notify_threadsafe(event.as_dict())
        return
    try:
        pipe = _redis_publisher().pipeline(transaction=False)
        channel = redis_channel()
        # A message carries up to MESSAGE_EVENTS events, in chain order: every subscribed web
        # process decodes each message, so a batch of the sealer costs them a few, not thousands.
        for start in range(0, len(events), MESSAGE_EVENTS):
            # The events' own JSON texts (encoded once, when they were chained), joined.
            message = (
                '{"events":[' + ",".join(event.as_json() for event in events[start : start + MESSAGE_EVENTS]) + "]}"
            )
            pipe.publish(channel, message)
        pipe.execute()
    except Exception:
        logger.warning("could not publish %d audit events to Redis; the stream will poll for them", len(events))
