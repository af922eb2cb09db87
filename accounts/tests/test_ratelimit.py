"""Rate limits: per user or client IP, shared by web processes through Redis, 503 for the webhook."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.cache import cache
from django.test import RequestFactory

from accounts.ratelimit import client_ip

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_limit(settings: Any) -> Iterator[Any]:
    settings.AUTOHEAL_RATE_LIMIT = (3, 60)
    settings.AUTOHEAL_WEBHOOK_RATE_LIMIT = (2, 60)
    cache.clear()
    yield settings
    cache.clear()


def _spend(client: Any, count: int, path: str = "/audit", **extra: Any) -> list[int]:
    return [client.get(path, **extra).status_code for _ in range(count)]


@pytest.mark.django_db
def test_the_request_over_the_limit_gets_429_with_retry_after(client: Any, small_limit: Any) -> None:
    assert 429 not in _spend(client, 3)
    response = client.get("/audit")
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "rate limit" in response.json()["error"]
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_each_user_has_their_own_budget(client: Any, small_limit: Any, make_user: Any) -> None:
    client.force_login(make_user("ann", ["ops"]))
    assert _spend(client, 3) == [200, 200, 200]
    assert client.get("/audit").status_code == 429
    client.force_login(make_user("bob", ["ops"]))
    assert client.get("/audit").status_code == 200


@pytest.mark.django_db
def test_guessing_api_keys_is_rate_limited(client: Any, small_limit: Any) -> None:
    codes = [client.get("/audit", HTTP_AUTHORIZATION=f"Bearer ahk_{i:012d}_guess").status_code for i in range(4)]
    assert codes == [401, 401, 401, 429]


@pytest.mark.django_db
def test_an_api_key_has_its_own_budget(client: Any, small_limit: Any, make_api_key: Any) -> None:
    key = make_api_key("busy", "ops")
    assert _spend(client, 3, HTTP_AUTHORIZATION=f"Bearer {key}") == [200, 200, 200]
    assert client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 429
    # Anonymous callers from the same address are counted apart from the key.
    assert client.get("/audit").status_code == 401


@pytest.mark.django_db
def test_probes_and_metrics_are_never_limited(client: Any, small_limit: Any) -> None:
    for path in ("/", "/readyz", "/metrics"):
        assert 429 not in _spend(client, 6, path)


@pytest.mark.django_db
def test_the_webhook_answers_503_not_429_when_over_its_limit(client: Any, small_limit: Any) -> None:
    codes = [client.post("/alert", data=b"{}", content_type="application/json").status_code for _ in range(3)]
    assert 429 not in codes[:2] and 503 not in codes[:2]
    assert codes[2] == 503
    response = client.post("/alert", data=b"{}", content_type="application/json")
    assert response.status_code == 503
    assert int(response["Retry-After"]) >= 1
    # The webhook's budget is its own: the API is still open to this client.
    assert client.get("/audit").status_code == 401


@pytest.mark.django_db
def test_forwarded_for_is_ignored_from_untrusted_peers(client: Any, small_limit: Any) -> None:
    small_limit.AUTOHEAL_TRUSTED_PROXIES = []
    codes = [client.get("/audit", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code for i in range(4)]
    assert codes[-1] == 429


@pytest.mark.django_db
def test_forwarded_for_separates_clients_behind_a_trusted_proxy(client: Any, small_limit: Any) -> None:
    small_limit.AUTOHEAL_TRUSTED_PROXIES = ["127.0.0.0/8"]
    assert 429 not in [client.get("/audit", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code for i in range(6)]
    assert _spend(client, 4, HTTP_X_FORWARDED_FOR="203.0.113.9")[-1] == 429


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("10.0.0.5", "203.0.113.7", [], "10.0.0.5"),
        ("10.0.0.5", "203.0.113.7", ["10.0.0.0/8"], "203.0.113.7"),
        # The client wrote its own header; the proxy appended the real address on the right.
        ("10.0.0.5", "1.2.3.4, 203.0.113.7", ["10.0.0.0/8"], "203.0.113.7"),
        # Two trusted proxies: skip every trusted hop from the right.
        ("10.0.0.5", "203.0.113.7, 10.0.0.9", ["10.0.0.0/8"], "203.0.113.7"),
        ("10.0.0.5", "garbage, 10.0.0.9", ["10.0.0.0/8"], "10.0.0.9"),
        ("10.0.0.5", "", ["10.0.0.5"], "10.0.0.5"),
        ("2001:db8::1", "2001:db8:ffff::7", ["2001:db8::/64"], "2001:db8:ffff::7"),
    ],
)
def test_client_ip_takes_the_rightmost_untrusted_address(
    settings: Any, peer: str, forwarded: str, trusted: list[str], expected: str
) -> None:
    settings.AUTOHEAL_TRUSTED_PROXIES = trusted
    request = RequestFactory().get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


# --- Two real web processes sharing Redis ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"web process on port {port} exited with {process.returncode}")
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    pytest.fail(f"web process on port {port} did not start")


@pytest.mark.redis
@pytest.mark.django_db
def test_the_101st_request_is_refused_across_two_web_processes(tmp_path: Path) -> None:
    import redis as redis_lib

    redis_url = os.environ["AUTOHEAL_TEST_REDIS_URL"]
    raw = redis_lib.Redis.from_url(redis_url)
    from django.db import connection

    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOHEAL_")}
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    else:
        env.pop("DATABASE_URL", None)
    env.update({"REDIS_URL": redis_url, "AUTOHEAL_DATA_DIR": str(tmp_path), "AUTOHEAL_RATE_LIMIT": "100/60s"})
    ports = [_free_port(), _free_port()]
    bin_dir = Path(sys.executable).parent
    commands = [
        # One ASGI and one WSGI server: the limiter must hold under both.
        [str(bin_dir / "daphne"), "-b", "127.0.0.1", "-p", str(ports[0]), "autoheal_site.asgi:application"],
        [str(bin_dir / "gunicorn"), "-b", f"127.0.0.1:{ports[1]}", "-w", "1", "autoheal_site.wsgi:application"],
    ]
    processes = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for cmd in commands
    ]
    try:
        for port, process in zip(ports, processes, strict=True):
            _wait_until_up(port, process)
        # Keep the 101 requests inside one fixed window (not a timing assertion: only alignment).
        remaining = 60 - time.time() % 60
        if remaining < 8:
            time.sleep(remaining + 0.5)
        # Start from zero: only the rate-limit counters, the database may be shared with other tests.
        for key in raw.scan_iter("*autoheal:rl:*"):
            raw.delete(key)
        with requests.Session() as session:
            codes = [session.get(f"http://127.0.0.1:{ports[i % 2]}/audit", timeout=10).status_code for i in range(100)]
            assert codes.count(401) == 100, codes
            over = session.get(f"http://127.0.0.1:{ports[100 % 2]}/audit", timeout=10)
            other = session.get(f"http://127.0.0.1:{ports[101 % 2]}/audit", timeout=10)
        assert over.status_code == 429
        assert other.status_code == 429
        assert int(over.headers["Retry-After"]) >= 1
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.redis
def test_redis_counters_are_shared_and_expire_with_their_window(settings: Any) -> None:
    import redis as redis_lib

    from accounts.ratelimit import _hit

    url = os.environ["AUTOHEAL_TEST_REDIS_URL"]
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    raw = redis_lib.Redis.from_url(url)
    probe = f"probe-{uuid.uuid4().hex}"
    assert [_hit(probe, 60) for _ in range(3)] == [1, 2, 3]
    (key,) = raw.keys(f"*{probe}*")
    assert 0 < raw.ttl(key) <= 61
    # The count lives in Redis itself, where every web process reads and bumps it.
    assert int(raw.get(key) or 0) == 3
    raw.delete(key)
