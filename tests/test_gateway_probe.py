"""The black-box probe, through the real gateway, gunicorn and daphne.

A request for the live stream that reaches the request/response process must cost it nothing,
however it is spelt, and the metrics must never leave the deployment without their token.
"""

from __future__ import annotations

import socket

import pytest
import requests

from tests.live_stream_support import ops_user
from tests.real_stack import full_stack

# Spellings that a client can use for one path; the gateway and Django must agree on each.
EVENTS_VARIANTS = [
    "/events",
    "/%65vents",
    "/%65%76%65%6e%74%73",
    "/%45vents",
    "/ev%65nts",
    "/event%73",
    "/./events",
    "/%2e/events",
    "/x/../events",
    "/x/%2e%2e/events",
    "//events",
    "/events?kind=action_ok",
    "/%65vents?alertname=x",
    "/events/",
    "/events%2F",
    "/EVENTS",
    "/x/y/../../events",
    "/%2E%2E/events",
    "/.%2e/events",
    "/events#frag",
    "///%65vents",
    "/events%3Fkind=x",
    "/ev%65nts/.",
    "/a/../%65vents",
    "/events;x",
]
METRICS_VARIANTS = [
    "/metrics",
    "/%6detrics",
    "/%6Detrics",
    "/%6d%65%74%72%69%63%73",
    "/metric%73",
    "/./metrics",
    "/%2e/metrics",
    "/x/../metrics",
    "/x/%2e%2e/metrics",
    "//metrics",
    "/metrics/",
    "/metrics?name=autoheal_enabled",
    "/METRICS",
    "/metrics%2F",
    "/%2E%2E/metrics",
    "/.%2e/metrics",
    "///%6detrics",
    "/a/b/../../metrics",
    "/metrics%3Fx",
    "/m%65trics",
    "/metrics;x",
    "/x/..%2fmetrics",
    "/%2fmetrics",
    "/static/../metrics",
    "/metrics/.",
]


def _raw_get(port: int, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no client-side normalisation); status and first bytes."""
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        if b"text/event-stream" not in received.lower():
            # Anything but an open stream ends (Connection: close): read the whole answer.
            while chunk := sock.recv(65536):
                received += chunk
    status_line = received.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), (target, received[:200])
    return int(status_line.split()[1]), received


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_encoded_stream_and_metrics_requests_leave_the_web_process_answering_and_hide_the_metrics() -> None:
    from accounts.services import apikey_create

    ops_user()
    _, ops_key = apikey_create(name="probe-ops", role="ops", created_by="test")
    bearer = {"Authorization": f"Bearer {ops_key}"}
    assert len(EVENTS_VARIANTS) + len(METRICS_VARIANTS) == 50
    with full_stack() as (gw, web, _stream):
        for target in EVENTS_VARIANTS:
            status, body = _raw_get(gw.port, target, bearer)
            # The stream process streams it, or someone answers 4xx; nobody hangs or fails.
            assert status < 500, (target, body[:300])
            if status == 200:
                assert b"text/event-stream" in body.lower(), target
        for target in METRICS_VARIANTS:
            status, body = _raw_get(gw.port, target, bearer)
            assert status < 500, (target, body[:300])
            assert b"# HELP" not in body and b"autoheal_" not in body, target
        # The request threads are all free: the probe and a health check are answered at once.
        assert requests.get(gw.url("/readyz"), timeout=1).status_code == 200
        assert requests.get(web.url("/readyz"), timeout=1).status_code == 200
        # Straight to the web process (no gateway in the way), the stream is refused, not served.
        for target in ("/events", "/%65vents", "/ev%65nts?kind=x"):
            status, body = _raw_get(web.port, target, bearer)
            assert status == 404 and b"stream process" in body, (target, body[:300])
        assert requests.get(web.url("/readyz"), timeout=1).status_code == 200
        # With the token, Prometheus still gets the metrics from the web process.
        token = {"Authorization": "Bearer metrics-token-for-the-probe-tests-0123456789"}
        assert b"# HELP" in requests.get(web.url("/metrics"), headers=token, timeout=5).content
