"""A client-chosen script prefix changes no limit and no guard, on either server.

daphne takes ``Daphne-Root-Path`` and gunicorn a ``SCRIPT_NAME`` header from clients; the probe used
them to make ``/audit`` look like a static file (no rate limit) and ``/metrics`` like another path
(no token). Each server runs for real here, with the deployment's launch settings.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.live_stream_support import ops_user
from tests.real_stack import Server, stack_env, stream_server, web_server

LIMIT = 5
PREFIX_HEADERS = {"daphne": "Daphne-Root-Path", "gunicorn": "SCRIPT_NAME"}


@contextlib.contextmanager
def _server(kind: str) -> Iterator[Server]:
    data_dir = Path(tempfile.mkdtemp(prefix="autoheal-prefix-"))
    env = stack_env(data_dir, AUTOHEAL_RATE_LIMIT=f"{LIMIT}/1h")
    start = stream_server if kind == "daphne" else web_server
    with start(env, data_dir) as server:
        yield server


def _clear_rate_limits() -> None:
    import os

    import redis

    raw = redis.Redis.from_url(os.environ["AUTOHEAL_TEST_REDIS_URL"])
    for key in raw.scan_iter("*autoheal:rl:*"):
        raw.delete(key)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["daphne", "gunicorn"])
def test_a_client_script_prefix_changes_neither_the_rate_limit_nor_the_metrics_guard(kind: str) -> None:
    from accounts.services import apikey_create

    ops_user()
    _, key = apikey_create(name=f"prefix-{kind}", role="ops", created_by="test")
    bearer = {"Authorization": f"Bearer {key}"}
    header = PREFIX_HEADERS[kind]
    with _server(kind) as server, requests.Session() as http:
        # Metrics without the token, under a made-up prefix: refused or not found, never served.
        for prefix, path in (("/x", "/x/metrics"), ("/static", "/static/metrics"), ("/", "/metrics")):
            answer = http.get(server.url(path), headers={header: prefix}, timeout=5)
            assert answer.status_code in (401, 404), (prefix, answer.status_code)
            assert b"# HELP" not in answer.content
        _clear_rate_limits()
        codes = [http.get(server.url("/audit"), headers=bearer, timeout=5).status_code for _ in range(LIMIT)]
        assert codes == [200] * LIMIT
        assert http.get(server.url("/audit"), headers=bearer, timeout=5).status_code == 429
        # Spent budget: the same view under a prefix that looks static (or exempt) is not served.
        for prefix, path in (("/static", "/static/audit"), ("/readyz", "/readyz/audit"), ("/x", "/x/audit")):
            for _ in range(3):
                answer = http.get(server.url(path), headers={**bearer, header: prefix}, timeout=5)
                assert answer.status_code in (404, 429), (prefix, answer.status_code, answer.text[:200])
        # And wrong passwords keep counting against the login's budget under a prefix.
        login = http.post(
            server.url("/static/accounts/login/"),
            headers={header: "/static"},
            data={"username": "operator", "password": "wrong"},
            timeout=5,
        )
        assert login.status_code in (403, 404, 429)
