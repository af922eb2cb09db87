"""Wake idle workers when new jobs commit, so no worker polls for seconds.

Three transports, chosen by ``AUTOHEAL_WAKEUP`` (``auto`` picks the first that applies):

- ``postgres``: ``NOTIFY autoheal_jobs``; each worker process LISTENs on a dedicated psycopg 3
  connection in a background thread (no Django connection is held open for it);
- ``redis``: publish on the ``autoheal:jobs`` channel; workers subscribe (needs ``REDIS_URL``);
- ``local``: an in-process event, for the all-in-one mode on SQLite.

``notify_jobs`` runs after the commit of the jobs it announces (``transaction.on_commit``). On
PostgreSQL it hands the ``NOTIFY`` to this process's sender thread, which sends it on a connection
of its own and folds every request that arrives while one is in flight into the next: the request
thread pays no round trip, and the writers' transactions never carry a ``NOTIFY`` (PostgreSQL
serialises the commits of notifying transactions on one lock, WAL flush included, which would cap
the whole deployment's ingest at one commit at a time). The in-process event is always set too,
and workers still poll every few seconds as a safety net: a lost notification only delays a job,
it never loses it (the job is durable in the database).
"""

from __future__ import annotations

import contextlib
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
_sender_lock = threading.Lock()
_sender: _Sender | None = None


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
            _postgres_sender().request()
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


def _conninfo(dbname: str) -> str:
    """A libpq connection string for the default database under ``dbname``."""
    import psycopg

    db: dict[str, Any] = dict(settings.DATABASES["default"])
    params = {
        "dbname": dbname,
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": str(db["PORT"]) if db.get("PORT") else None,
    }
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v})


def _current_dbname() -> str:
    # Read in the calling thread: tests run against test_<name>, which Django set there.
    return str(connection.settings_dict.get("NAME") or settings.DATABASES["default"].get("NAME") or "")


def _postgres_sender() -> _Sender:
    global _sender
    dbname = _current_dbname()
    with _sender_lock:
        if _sender is None or not _sender.is_alive() or _sender.dbname != dbname:
            if _sender is not None:
                _sender.stop()
            _sender = _Sender(dbname)
            _sender.start()
        return _sender


def stop_sending(timeout: float = 2.0) -> None:
    """Stop this process's sender thread and close its connection (tests, before a database is
    dropped); the next ``notify_jobs`` starts a new one."""
    global _sender
    with _sender_lock:
        sender, _sender = _sender, None
    if sender is not None:
        sender.stop()
        sender.join(timeout)


class _Sender(threading.Thread):
    """Sends this process's job notifications, one at a time, folding the requests that wait.

    Its connection is in autocommit with ``synchronous_commit`` off: a notification is worth a
    WAL record but not a wait for the disk (lost in a crash, it only delays a job until the
    workers' poll).
    """

    def __init__(self, dbname: str) -> None:
        super().__init__(name="autoheal-wakeup-sender", daemon=True)
        self.dbname = dbname
        self._wanted = threading.Event()
        self._stopped = threading.Event()
        self._conn: Any = None

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wanted.set()

    def run(self) -> None:
        try:
            while True:
                self._wanted.wait()
                if self._stopped.is_set():
                    return
                self._wanted.clear()
                try:
                    self._send()
                except Exception as exc:
                    logger.warning("could not send the job wake-up over postgres: %s", type(exc).__name__)
                    self._close()
                    self._stopped.wait(0.5)
        finally:
            self._close()

    def _send(self) -> None:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(_conninfo(self.dbname), autocommit=True, connect_timeout=5)
            self._conn.execute("SET synchronous_commit = off")
        self._conn.execute("SELECT pg_notify(%s, '')", [CHANNEL])

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                self._conn.close()
            self._conn = None


class _Listener(threading.Thread):
    """Turns PostgreSQL notifications or Redis messages into the in-process event."""

    def __init__(self, kind: str) -> None:
        super().__init__(name=f"autoheal-wakeup-{kind}", daemon=True)
        self.kind = kind
        self._stopped = threading.Event()
        self.dbname = _current_dbname()

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

        with psycopg.connect(_conninfo(self.dbname), autocommit=True, connect_timeout=5) as conn:
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
