"""deploy/gateway/haproxy.cfg with the real haproxy: /events to the stream, the rest to web, no /metrics."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from conftest import service_missing

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "gateway" / "haproxy.cfg"


class Backend(ThreadingHTTPServer):
    """A stand-in for one Autoheal process: answers every request with what it received."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[dict[str, str]] = []
        super().__init__(("127.0.0.1", 0), _Echo)


class _Echo(BaseHTTPRequestHandler):
    server: Backend

    def do_GET(self) -> None:
        # A header sent twice (haproxy adds its own X-Forwarded-For line) reads as one list, as
        # Django's servers join them.
        headers = {k.lower(): ", ".join(self.headers.get_all(k) or []) for k in self.headers}
        seen = {"backend": self.server.name, "path": self.path, **headers}
        self.server.seen.append(seen)
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, Backend, Backend]]:
    if not shutil.which("haproxy"):
        service_missing("haproxy not installed (the deploy gate installs it)")
    web, stream = Backend("web"), Backend("stream")
    for backend in (web, stream):
        threading.Thread(target=backend.serve_forever, daemon=True).start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "GATEWAY_BIND": f"127.0.0.1:{port}",
        "GATEWAY_WEB": f"127.0.0.1:{web.server_address[1]}",
        "GATEWAY_STREAM": f"127.0.0.1:{stream.server_address[1]}",
    }
    log = open(tmp_path / "haproxy.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(["haproxy", "-db", "-f", str(CONFIG)], env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the gateway did not start: " + (tmp_path / "haproxy.log").read_text(errors="replace"))
            time.sleep(0.1)
        yield url, web, stream
    finally:
        process.terminate()
        process.wait(timeout=10)
        for backend in (web, stream):
            backend.shutdown()
            backend.server_close()


def test_the_live_stream_goes_to_the_stream_process_and_everything_else_to_web(gateway):
    url, _, _ = gateway
    assert requests.get(url + "/events?kind=action_ok", timeout=5).json()["backend"] == "stream"
    for path in ("/", "/audit?since=2h", "/ops/", "/eventsource", "/api/switch"):
        answer = requests.get(url + path, timeout=5).json()
        assert (answer["backend"], answer["path"]) == ("web", path)


def test_metrics_are_not_served_to_the_outside(gateway):
    url, web, stream = gateway
    for path in ("/metrics", "/metrics/", "/metrics?name=autoheal_enabled"):
        assert requests.get(url + path, timeout=5).status_code == 403
    assert not [seen for seen in web.seen + stream.seen if seen["path"].startswith("/metrics")]


def test_the_callers_address_is_appended_so_a_forged_header_cannot_replace_it(gateway):
    url, _, _ = gateway
    answer = requests.get(url + "/audit", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=5).json()
    # Autoheal reads from the right and trusts only hops its trusted proxies added: 127.0.0.1 here.
    assert answer["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"


def test_health_checks_ask_readyz_with_a_host_name_autoheal_allows(gateway):
    _, web, _ = gateway
    checks = [seen for seen in web.seen if seen["path"] == "/readyz" and "x-forwarded-for" not in seen]
    deadline = time.monotonic() + 15
    while not checks and time.monotonic() < deadline:
        time.sleep(0.2)
        checks = [seen for seen in web.seen if seen["path"] == "/readyz" and "x-forwarded-for" not in seen]
    assert checks and checks[0]["host"] == "autoheal-web"


def _raw_get(url: str, target: str) -> tuple[int, dict[str, str]]:
    """GET ``target`` exactly as written (http.client sends it unchanged; requests would not)."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    return response.status, (json.loads(body) if response.status == 200 else {})


def test_every_rule_matches_the_normalised_path_however_it_is_spelt(gateway):
    url, web, stream = gateway
    for target in ("/%65vents", "/ev%65nts?kind=x", "/x/../events", "/%2e/events", "//events", "/.%2e/events"):
        answer = _raw_get(url, target)[1]
        # Forwarded as Django will route it, so the gateway and Autoheal agree on the view.
        assert answer["backend"] == "stream", target
        assert answer["path"].split("?")[0] == "/events", target
    routed = {
        "/%61udit": "/audit",
        "/x/../audit": "/audit",
        "/./ops/": "/ops/",
        "/%6Fps/": "/ops/",
        "/%61lert": "/alert",
        "//%61dmin/": "/admin/",
        "/api/%73witch": "/api/switch",
        "/%72eadyz": "/readyz",
        "/console/../%63onsole": "/console",
    }
    for target, normalised in routed.items():
        answer = _raw_get(url, target)[1]
        assert (answer["backend"], answer["path"]) == ("web", normalised), target
    for target in ("/%6detrics", "/%6Detrics", "/metric%73", "/x/%2e%2e/metrics", "//metrics", "/./metrics/"):
        assert _raw_get(url, target)[0] == 403, target
    assert not [seen for seen in web.seen + stream.seen if "etric" in seen["path"]]
