"""What the servers hand to Django: a script prefix only from a trusted proxy, no stream on WSGI.

Both servers let the client choose a script prefix: daphne reads ``Daphne-Root-Path`` from any
request, and gunicorn believes a ``SCRIPT_NAME`` header from the peers in its
``forwarded_allow_ips``. Django then routes on the rest of the path while ``request.path`` still
carries the prefix, so a request for ``/static/audit`` with the prefix ``/static`` reached the
audit view looking like a static file. Here a prefix counts only when the direct peer is one of
``AUTOHEAL_TRUSTED_PROXIES``; from anyone else it is folded back into the path, which then routes
(or fails to route) exactly as written.

On the ASGI side, stream requests are let through their set-up a few at a time (see
``STREAM_SETUP_CONCURRENCY``).

The live stream never ends, and a WSGI server would give it a request thread forever (Django
cannot stream an asynchronous iterator over WSGI: it reads it to the end first). So the WSGI
application answers 404 to anything Django would route to ``/events``, whatever its spelling,
before a thread is spent on it.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from django.core.handlers.wsgi import get_path_info
from django.urls import Resolver404, resolve, reverse

from accounts.ratelimit import address_is_trusted_proxy

STREAM_ROUTE = "events"
_STREAM_REFUSAL = json.dumps(
    {"error": "the live stream /events is served by the stream process (daphne), not this one"}
).encode()


@lru_cache(maxsize=1)
def _stream_word() -> str:
    return reverse(STREAM_ROUTE).strip("/")


def routes_to_stream(path_info: str) -> bool:
    """Whether Django would hand ``path_info`` (decoded, as Django routes it) to the live stream."""
    if _stream_word() not in path_info:
        return False  # no resolving on every other request: a stream path contains its route's text
    try:
        return resolve(path_info).url_name == STREAM_ROUTE
    except Resolver404:
        return False


class WSGIGuard:
    """The WSGI application with the script-prefix rule and the stream refusal (module doc)."""

    def __init__(self, application: Callable[..., Iterable[bytes]]) -> None:
        self.application = application

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        script_name = environ.get("SCRIPT_NAME", "")
        if script_name and not address_is_trusted_proxy(environ.get("REMOTE_ADDR", "")):
            # Both are WSGI strings (bytes as latin-1), so joining them keeps the request's bytes.
            environ["PATH_INFO"] = script_name.rstrip("/") + environ.get("PATH_INFO", "")
            environ["SCRIPT_NAME"] = ""
        if routes_to_stream(get_path_info(environ)):
            start_response(
                "404 Not Found",
                [("Content-Type", "application/json"), ("Content-Length", str(len(_STREAM_REFUSAL)))],
            )
            return [_STREAM_REFUSAL]
        return self.application(environ, start_response)


# Stream requests whose answer has not started yet, per process. Before its view runs, a request
# passes the session, authentication and rate-limit middleware, each of which may open a database
# connection; a burst of hundreds of stream opens (every console reconnecting after a restart)
# would open that many connections at once and PostgreSQL would refuse the rest ("too many
# clients": 500s). The answer's start is when the view has handed its connection back.
STREAM_SETUP_CONCURRENCY = 8
_stream_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _stream_gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _stream_gates.get(loop)
    if gate is None:
        gate = _stream_gates[loop] = asyncio.Semaphore(STREAM_SETUP_CONCURRENCY)
    return gate


class ASGIGuard:
    """The ASGI application with the script-prefix rule and the stream set-up gate (module doc)."""

    def __init__(self, application: Callable[..., Any]) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope.get("root_path") and scope["type"] in ("http", "websocket"):
            client = scope.get("client") or ("", 0)
            if not address_is_trusted_proxy(str(client[0])):
                scope = {**scope, "root_path": ""}
        path_info = str(scope.get("path", "")).removeprefix(str(scope.get("root_path") or "")) or "/"
        if scope["type"] != "http" or not routes_to_stream(path_info):
            await self.application(scope, receive, send)
            return
        gate = _stream_gate()
        await gate.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                gate.release()

        async def send_releasing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                release()
            await send(message)

        try:
            await self.application(scope, receive, send_releasing)
        finally:
            release()
