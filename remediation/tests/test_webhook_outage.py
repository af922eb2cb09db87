"""The database goes away mid-run: POST /alert answers 503 (Alertmanager retries), loses nothing.

The outage is real, not mocked: Django talks to PostgreSQL through a loopback TCP relay that the
test cuts (established connections and the listening port), then brings back on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection

from remediation.models import Alert, Job, Policy

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TOKEN = "outage-token"


class Relay:
    """A loopback TCP relay in front of PostgreSQL that can be cut and restored."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.accepted = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: the relay is cut
            server = socket.create_connection(self.upstream, timeout=10)
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
                self.accepted += 1
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Stop listening and sever every established connection, like a database going down."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def relay() -> Iterator[Relay]:
    saved = dict(connection.settings_dict)
    upstream = (saved["HOST"] or "127.0.0.1", int(saved["PORT"] or 5432))
    relay = Relay(upstream)
    relay.start()
    connection.close()
    connection.settings_dict["HOST"] = "127.0.0.1"
    connection.settings_dict["PORT"] = str(relay.port)
    try:
        yield relay
    finally:
        relay.cut()
        connection.close()
        connection.settings_dict.update(saved)


def test_database_down_gives_503_and_the_redelivery_is_processed_once(
    client: Any, settings: Any, relay: Relay, fixture_body: Callable[[str], bytes]
) -> None:
    settings.AUTOHEAL_WEBHOOK_TOKENS = [TOKEN]
    Policy.objects.create(name="restart-any", matchers=['alertname=~".+"'], action="restart_container")

    def post(name: str) -> Any:
        return client.post(
            "/alert", data=fixture_body(name), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
        )

    assert post("group-five-firing.json").status_code == 202
    assert relay.accepted >= 1  # the traffic really goes through the relay

    relay.cut()  # the database stops mid-run, with the connection open
    down = post("single-firing.json")
    assert down.status_code == 503
    assert down.json() == {"error": "database unavailable"}
    # Alertmanager retries while it is still down: a refused connection is a 503 as well.
    assert post("single-firing.json").status_code == 503

    relay.start()  # back, on the same address
    retried = post("single-firing.json")
    assert retried.status_code == 202
    assert retried.json() == {"accepted": 1, "duplicates": 0, "jobs": 1}
    assert post("single-firing.json").json() == {"accepted": 0, "duplicates": 1, "jobs": 0}

    incident = Alert.objects.get(fingerprint="ecf68c16ba2afc4f")
    assert incident.deliveries == 2  # the refused deliveries left nothing behind
    assert Job.objects.filter(alert=incident).count() == 1
    assert Alert.objects.count() == 6
