"""Wake idle workers when new jobs commit, so no worker polls for seconds.

Three transports, chosen by ``AUTOHEAL_WAKEUP`` (``auto`` picks the first that applies):

- ``postgres``: ``NOTIFY autoheal_jobs``; each worker process LISTENs on a dedicated psycopg 3
  connection in a background thread (no Django connection is held open for it);
- ``redis``: publish on the ``autoheal:jobs`` channel; workers subscribe (needs ``REDIS_URL``);
- ``local``: an in-process event, for the all-in-one mode on SQLite.

Intake sends the PostgreSQL notification inside its job INSERT (``remediation.intake_sql``), so it
leaves with the commit and costs no round trip of its own; ``notify_jobs`` is for everything else.
The in-process event is always set too, and workers still poll every few seconds as a safety net:
a lost notification only delays a job, it never loses it (the job is durable in the database).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

CHANNEL = "autoheal_jobs"
REDIS_CHANNEL = "autoheal:jobs"

_local_event = threading.Event()
_listener_lock = threading.Lock()
_listener: _Listener | None = None


def transport() -> str:
    """The wake-up transport in use: postgres, redis or local."""
    choice = settings.AUTOHEAL_WAKEUP
    if choice != "auto":
        return str(choice)
    if connection.vendor == "postgresql":
        return "postgres"
    if settings.REDIS_URL:
        return "redis"
    return "local"


def notify_jobs() -> None:
    """Tell workers that jobs are ready (call from ``transaction.on_commit``)."""
    _local_event.set()
    kind = transport()
    try:
        if kind == "postgres":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])
        elif kind == "redis":
            import redis

            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
            try:
                client.publish(REDIS_CHANNEL, "1")
            finally:
                client.close()
    except Exception:
        # The poll picks the job up anyway; never fail the caller's request over a wake-up.
        logger.warning("could not send the job wake-up over %s", kind)


def wake_local() -> None:
    """Wake a waiting worker in this process (used to stop it promptly)."""
    _local_event.set()


def wait_for_jobs(timeout: float) -> bool:
    """Block up to ``timeout`` seconds for a notification; True if one came."""
    fired = _local_event.wait(timeout)
    _local_event.clear()
    return fired


def listen() -> None:
    """Start this process's listener thread for the cross-process transport (idempotent)."""
    global _listener
    kind = transport()
    if kind == "local":
        return
    with _listener_lock:
        if _listener is None or not _listener.is_alive():
            _listener = _Listener(kind)
            _listener.start()


def stop_listening() -> None:
    """Stop the listener thread (a worker calls this on its way out)."""
    global _listener
    with _listener_lock:
        if _listener is not None:
            _listener.stop()
            _listener = None


class _Listener(threading.Thread):
    """Turns PostgreSQL notifications or Redis messages into the in-process event."""

    def __init__(self, kind: str) -> None:
        super().__init__(name=f"autoheal-wakeup-{kind}", daemon=True)
        self.kind = kind
        self._stopped = threading.Event()
        # Read in the starting thread: tests run against test_<name>, which Django set there.
        self.dbname = connection.settings_dict.get("NAME") or settings.DATABASES["default"].get("NAME") or ""

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                if self.kind == "postgres":
                    self._listen_postgres()
                else:
                    self._listen_redis()
            except Exception as exc:
                logger.warning(
                    "wake-up listener (%s) lost its connection: %s; reconnecting", self.kind, type(exc).__name__
                )
                self._stopped.wait(1.0)

    def _listen_postgres(self) -> None:
        import psycopg

        db: dict[str, Any] = dict(settings.DATABASES["default"])
        params = {
            "dbname": self.dbname,
            "user": db.get("USER") or None,
            "password": db.get("PASSWORD") or None,
            "host": db.get("HOST") or None,
            "port": str(db["PORT"]) if db.get("PORT") else None,
        }
        conninfo = psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v})
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            while not self._stopped.is_set():
                for _ in conn.notifies(timeout=1.0, stop_after=1):
                    _local_event.set()

    def _listen_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(REDIS_CHANNEL)
            while not self._stopped.is_set():
                if pubsub.get_message(timeout=1.0) is not None:
                    _local_event.set()
        finally:
            pubsub.close()
            client.close()
