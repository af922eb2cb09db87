"""Who keeps a stream open: the credential is re-checked while it runs, and streams per user are capped.

A stream lasts hours, so the check at opening is not enough: every
``AUTOHEAL_STREAM_RECHECK_SECONDS`` (30 s) the stream checks its credential again (the API key is
not revoked, the provider token has not expired, the session still exists and the user still has
the ops or admin role) and ends when it no longer holds. Each check runs on a worker thread and
closes its database connection at once, so an idle stream still holds none.

Concurrent streams are capped per user (``AUTOHEAL_STREAM_MAX_PER_USER``, default 20). With
``REDIS_URL`` the count is shared by every stream process (a sorted set per user, each stream a
member with an expiry that each re-check extends, so a process that died frees its slots within
three re-check periods); without Redis it is per process. If Redis is unreachable the cap is not
applied and a warning is logged: the cap guards capacity, like the rate limiter.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.db import connection
from django.utils.crypto import constant_time_compare

from accounts.authentication import BearerError, bearer_token, token_user
from accounts.roles import is_ops

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credential:
    """What opened the stream: a bearer token, or a session (by its key) of ``user_id``."""

    user_id: Any
    token: str | None = None
    session_key: str | None = None

    @classmethod
    def of(cls, request: Any, user: Any) -> Credential:
        token = bearer_token(request)
        if token is not None:
            return cls(user_id=user.pk, token=token)
        return cls(user_id=user.pk, session_key=request.session.session_key)

    def still_valid(self) -> bool:
        """Read the credential again; runs on a thread, and hands its connection back at once."""
        try:
            return self._check()
        finally:
            connection.close()

    def _check(self) -> bool:
        if self.token is not None:
            try:
                user = token_user(self.token)
            except BearerError:
                return False
        else:
            if not self.session_key:
                return False
            session = import_module(settings.SESSION_ENGINE).SessionStore(self.session_key).load()
            if str(session.get(SESSION_KEY, "")) != str(self.user_id):
                return False  # logged out, expired, or another user's session now
            user = get_user_model().objects.filter(pk=self.user_id).first()
            # A password change ends other sessions in Django; it ends their streams too.
            if user is None or not constant_time_compare(
                session.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()
            ):
                return False
        return bool(user.pk == self.user_id and user.is_active and is_ops(user))


@lru_cache(maxsize=4)
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


_local_lock = threading.Lock()
_local_slots: dict[Any, dict[str, float]] = {}


def _lease_seconds() -> float:
    return 3 * float(settings.AUTOHEAL_STREAM_RECHECK_SECONDS)


@dataclass
class StreamSlot:
    """One stream's place in its user's cap."""

    user_id: Any
    stream_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def _key(self) -> str:
        return f"autoheal:streams:u{self.user_id}"

    def acquire(self) -> bool:
        """Take a place; False when the user already has the maximum number of streams open."""
        cap = settings.AUTOHEAL_STREAM_MAX_PER_USER
        now = time.time()
        if not settings.REDIS_URL:
            with _local_lock:
                slots = {k: v for k, v in _local_slots.get(self.user_id, {}).items() if v > now}
                if len(slots) >= cap:
                    _local_slots[self.user_id] = slots
                    return False
                slots[self.stream_id] = now + _lease_seconds()
                _local_slots[self.user_id] = slots
                return True
        try:
            pipe = _redis(settings.REDIS_URL).pipeline(transaction=True)
            pipe.zremrangebyscore(self._key, "-inf", now)
            pipe.zadd(self._key, {self.stream_id: now + _lease_seconds()})
            pipe.zcard(self._key)
            pipe.expire(self._key, int(_lease_seconds()) + 1)
            count = pipe.execute()[2]
            if int(count) > cap:
                # Over by this one (or by a stream opened at the same moment): give the place back.
                _redis(settings.REDIS_URL).zrem(self._key, self.stream_id)
                return False
        except Exception as exc:  # redis-py's errors vary with the failure (connection, timeout)
            logger.warning("stream cap not applied, Redis is unavailable: %s", type(exc).__name__)
        return True

    def refresh(self) -> None:
        """Extend the place's expiry (after each successful re-check)."""
        expiry = time.time() + _lease_seconds()
        if not settings.REDIS_URL:
            with _local_lock:
                if self.stream_id in _local_slots.get(self.user_id, {}):
                    _local_slots[self.user_id][self.stream_id] = expiry
            return
        try:
            client = _redis(settings.REDIS_URL)
            client.zadd(self._key, {self.stream_id: expiry}, xx=True)
            client.expire(self._key, int(_lease_seconds()) + 1)
        except Exception as exc:  # see acquire
            logger.warning("stream cap not refreshed, Redis is unavailable: %s", type(exc).__name__)

    def release(self) -> None:
        if not settings.REDIS_URL:
            with _local_lock:
                _local_slots.get(self.user_id, {}).pop(self.stream_id, None)
            return
        try:
            _redis(settings.REDIS_URL).zrem(self._key, self.stream_id)
        except Exception as exc:  # see acquire; the place expires by itself
            logger.warning("stream cap place not released, Redis is unavailable: %s", type(exc).__name__)
