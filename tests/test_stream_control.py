"""Streams under control, against the real stream process (daphne), PostgreSQL and Redis.

An open stream ends when its API key is revoked or its user loses the role; one user may hold a
bounded number of streams; a burst of hundreds of opens is answered without a 5xx, and open
streams hold no database connection while they wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.live_stream_support import SSEClient, live_web, ops_user, session_cookie, sse_clients

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
FAST_RECHECK = {"AUTOHEAL_STREAM_RECHECK_SECONDS": "1", "AUTOHEAL_STREAM_KEEPALIVE_SECONDS": "1"}


@pytest.fixture
def sse() -> Iterator[Callable[..., SSEClient]]:
    yield from sse_clients()


@pytest.fixture(autouse=True)
def _no_stream_places_left_over() -> Iterator[None]:
    """The per-user counts live in Redis and outlive a stopped server by their expiry (90 s); user
    ids repeat between test sessions, so no test here leaves places behind for the next one."""
    import redis

    raw = redis.Redis.from_url(os.environ["AUTOHEAL_TEST_REDIS_URL"])
    for key in raw.scan_iter("*autoheal:streams:*"):
        raw.delete(key)
    yield
    for key in raw.scan_iter("*autoheal:streams:*"):
        raw.delete(key)


def _ends_with_stream_error(client: SSEClient, within: float = 20) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        frame = client.next()
        if frame.event == "stream-error":
            with pytest.raises(AssertionError, match="the stream ended"):
                client.next()
            return frame.json()
    raise AssertionError("the stream went on")


def _api_key(name: str, role: str = "ops") -> str:
    from accounts.services import apikey_create

    return apikey_create(name=name, role=role, created_by="test")[1]


def test_a_revoked_api_key_ends_its_open_stream(sse: Callable[..., SSEClient]) -> None:
    from accounts.services import apikey_revoke

    key = _api_key("console-bot")
    other = _api_key("other-bot")
    with live_web(**FAST_RECHECK) as web:
        revoked = sse(web.url("/events"), cookie=None, headers={"Authorization": f"Bearer {key}"})
        kept = sse(web.url("/events"), cookie=None, headers={"Authorization": f"Bearer {other}"})
        assert revoked.wait_for("stream-open") and kept.wait_for("stream-open")
        apikey_revoke(name="console-bot", actor="admin")
        assert _ends_with_stream_error(revoked)["condition"] == "unauthorized"
        # The other key's stream goes on.
        assert kept.wait_for("keep-alive")


def test_a_user_who_loses_the_role_loses_the_stream(sse: Callable[..., SSEClient]) -> None:
    user = ops_user("shift-lead")
    cookie = session_cookie(user)
    with live_web(**FAST_RECHECK) as web:
        stream = sse(web.url("/events"), cookie=cookie)
        stream.wait_for("stream-open")
        stream.wait_for("keep-alive")
        user.groups.clear()
        assert _ends_with_stream_error(stream)["condition"] == "unauthorized"


def test_the_stream_past_the_per_user_cap_gets_429(sse: Callable[..., SSEClient], settings: Any) -> None:
    assert settings.AUTOHEAL_STREAM_MAX_PER_USER == 20  # the documented default
    key = _api_key("dashboard")
    bearer = {"Authorization": f"Bearer {key}"}
    with live_web(AUTOHEAL_STREAM_MAX_PER_USER="3") as web:
        streams = [sse(web.url("/events"), cookie=None, headers=bearer) for _ in range(3)]
        for stream in streams:
            assert stream.response.status_code == 200
        refused = httpx.get(web.url("/events"), headers=bearer, timeout=10)
        assert refused.status_code == 429
        assert "too-many-streams" in refused.text and int(refused.headers["Retry-After"]) >= 1
        # Another user is not affected; and a closed stream gives its place back.
        other = sse(web.url("/events"), cookie=session_cookie(ops_user("someone-else")))
        assert other.response.status_code == 200
        streams[0].close()
        deadline = time.monotonic() + 10
        while True:
            again = SSEClient(web.url("/events"), cookie=None, headers=bearer)
            if again.response.status_code == 200 or time.monotonic() > deadline:
                break
            again.close()
            time.sleep(0.2)
        assert again.response.status_code == 200
        again.close()


def _database_connections() -> int:
    """Connections to the test database other than this test's own."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


async def _open_streams(url: str, headers: dict[str, str], count: int) -> tuple[list[int], Any, Any]:
    stack = contextlib.AsyncExitStack()
    client = await stack.enter_async_context(
        httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=httpx.Limits(max_connections=count + 10))
    )

    async def one() -> int:
        response = await stack.enter_async_context(client.stream("GET", url, headers=headers))
        return response.status_code

    statuses = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    return [s if isinstance(s, int) else -1 for s in statuses], stack, client


def test_a_burst_of_500_stream_opens_gets_no_5xx_and_idle_streams_hold_no_connection() -> None:
    key = _api_key("wallboard")
    # The per-user request limit (100 a minute) would refuse most of the burst; it is tested elsewhere.
    with live_web(AUTOHEAL_STREAM_MAX_PER_USER="1000", AUTOHEAL_RATE_LIMIT="100000/60s") as web:
        loop = asyncio.new_event_loop()
        try:
            statuses, stack, _ = loop.run_until_complete(
                _open_streams(web.url("/events"), {"Authorization": f"Bearer {key}"}, 500)
            )
            try:
                assert statuses.count(200) == 500, {s: statuses.count(s) for s in set(statuses)}
                # 500 streams open and waiting: the stream process holds (almost) no connection.
                assert _database_connections() <= 3
            finally:
                loop.run_until_complete(stack.aclose())
        finally:
            loop.close()
