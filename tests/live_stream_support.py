"""Helpers for tests that run the real web process (daphne) and a separate writer process.

The web process serves the test database on a loopback socket that the test opened itself (port
0, handed over with ``daphne --fd``), so there is no port race. Writers are separate Python
processes calling ``audit_record`` against the same database and Redis, like the worker does.
Every process started here is stopped by its pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from conftest import service_missing

ROOT = Path(__file__).resolve().parent.parent

WRITER = """
import json, sys
import django
django.setup()
from django.db import transaction
from audit.services import audit_record, audit_record_many

class Rollback(Exception):
    pass

ids = []
for step in json.load(sys.stdin):
    if step.get("rollback"):
        try:
            with transaction.atomic():
                audit_record(**step["event"])
                raise Rollback
        except Rollback:
            pass
    elif "batch" in step:
        ids.extend(e.id for e in audit_record_many(step["batch"]))
    else:
        ids.append(audit_record(**step["event"]).id)
print(json.dumps(ids))
"""


def database_url() -> str:
    """The URL of the database this test process uses (pytest-django's ``test_`` database)."""
    from django.db import connection

    s = connection.settings_dict
    user = quote(s.get("USER") or "", safe="")
    password = quote(s.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = s.get("HOST") or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{s['NAME']}"


def process_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "autoheal_site.settings",
            "DATABASE_URL": database_url(),
            "REDIS_URL": os.environ["AUTOHEAL_TEST_REDIS_URL"],
            "AUTOHEAL_DATA_DIR": str(data_dir),
            "AUTOHEAL_AUDIT_JSONL": str(data_dir / "audit.jsonl"),
            "AUTOHEAL_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@dataclass
class LiveWeb:
    """A daphne process serving Autoheal on 127.0.0.1:port."""

    port: int
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log: Path
    sock: socket.socket
    env: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.sock.close()

    def write(self, steps: list[dict[str, Any]]) -> list[int]:
        """Run a separate writer process (as the worker would be) and return the committed ids."""
        proc = subprocess.run(
            [sys.executable, "-c", WRITER],
            input=json.dumps(steps).encode(),
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"writer failed: {proc.stderr.decode(errors='replace')[-2000:]}")
        return list(json.loads(proc.stdout.decode().strip().splitlines()[-1]))


@contextlib.contextmanager
def live_web(**extra_env: str) -> Iterator[LiveWeb]:
    """Start daphne on a socket bound to 127.0.0.1:0 and wait until it answers."""
    from django.db import connection

    if connection.vendor != "postgresql":
        service_missing("PostgreSQL: set DATABASE_URL=postgres://... (scripts/services.sh env)")
    if not os.environ.get("AUTOHEAL_TEST_REDIS_URL"):
        service_missing("Redis: set AUTOHEAL_TEST_REDIS_URL (scripts/services.sh up)")
    data_dir = Path(tempfile.mkdtemp(prefix="autoheal-live-"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    env = process_env(data_dir, **extra_env)
    log = data_dir / "daphne.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "--fd", str(sock.fileno()), "autoheal_site.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            pass_fds=(sock.fileno(),),
        )
    web = LiveWeb(port, proc, data_dir, log, sock, env)
    try:
        _wait_ready(web)
        yield web
    finally:
        web.stop()


def _wait_ready(web: LiveWeb) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if web.proc.poll() is not None:
            raise AssertionError(f"daphne exited: {web.log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            # Anonymous: answered (401) without touching the stream machinery.
            if httpx.get(web.url("/events"), timeout=2).status_code == 401:
                return
        time.sleep(0.2)
    raise AssertionError(f"daphne did not answer: {web.log.read_text(errors='replace')[-3000:]}")


def session_cookie(user: Any) -> str:
    """A committed session for ``user`` (the web process reads the same database)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def ops_user(username: str = "operator", role: str | None = "ops") -> Any:
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(username=username, password=None)
    if role:
        # get_or_create: transactional tests flush the groups the migration created.
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@dataclass
class SSEEvent:
    event: str
    id: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SSEClient:
    """A raw streaming HTTP client for text/event-stream, parsing frames as a browser would."""

    def __init__(self, url: str, *, cookie: str | None, headers: dict[str, str] | None = None) -> None:
        all_headers = {"Accept": "text/event-stream", **(headers or {})}
        if cookie:
            all_headers["Cookie"] = f"sessionid={cookie}"
        self._client = httpx.Client(timeout=httpx.Timeout(15.0))
        self._context = self._client.stream("GET", url, headers=all_headers)
        self.response = self._context.__enter__()
        self._lines = self.response.iter_lines()

    def next(self) -> SSEEvent:
        event, event_id, data = "message", None, []
        seen = False
        for line in self._lines:
            if line == "":
                if seen:
                    return SSEEvent(event, event_id, "\n".join(data))
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            seen = True
            if name == "event":
                event = value
            elif name == "id":
                event_id = value
            elif name == "data":
                data.append(value)
        raise AssertionError("the stream ended")

    def wait_for(self, event: str) -> SSEEvent:
        while True:
            frame = self.next()
            if frame.event == event:
                return frame

    def audit_events(self, count: int, timeout: float = 20.0) -> list[SSEEvent]:
        """The next ``count`` audit frames (keep-alives arrive every second, so this returns)."""
        deadline = time.monotonic() + timeout
        got: list[SSEEvent] = []
        while len(got) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(got)} of {count} events arrived: {[e.id for e in got]}")
            frame = self.next()
            if frame.event in ("audit", "stream-reset"):
                got.append(frame)
        return got

    def quiet_for(self, seconds: float) -> list[SSEEvent]:
        """Every non-keep-alive frame within the next ``seconds`` (to prove nothing extra came)."""
        deadline = time.monotonic() + seconds
        extra = []
        while time.monotonic() < deadline:
            frame = self.next()
            if frame.event != "keep-alive":
                extra.append(frame)
        return extra

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._context.__exit__(None, None, None)
        self._client.close()


def sse_clients() -> Iterator[Callable[..., SSEClient]]:
    """Body of an ``sse`` fixture: open SSE clients, all closed after the test."""
    opened: list[SSEClient] = []

    def open_(url: str, **kwargs: Any) -> SSEClient:
        client = SSEClient(url, **kwargs)
        opened.append(client)
        return client

    yield open_
    for client in opened:
        client.close()
