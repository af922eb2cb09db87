"""Ringing the live stream's doorbell; runs in whichever process committed the event.

With ``REDIS_URL`` set the doorbell is a Redis publish that every web process hears; without it
the event is handed straight to this process's feed. Either way the audit table stays the source
of truth: a lost doorbell delays an event, never loses it.
"""

from __future__ import annotations

import json
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
