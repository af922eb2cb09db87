"""Scripts read the live stream with an API key: a real web process, a real SSE response."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from accounts.services import apikey_create

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_events_stream_opens_for_an_api_key_and_not_without_one(tmp_path: Path) -> None:
    from django.db import connection

    _, key = apikey_create(name="stream-reader", role="ops", created_by="test")
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOHEAL_")}
    env.pop("REDIS_URL", None)
    env.update(
        {
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
            "AUTOHEAL_DATA_DIR": str(tmp_path),
        }
    )
    port = _free_port()
    daphne = Path(sys.executable).parent / "daphne"
    process = subprocess.Popen(
        [str(daphne), "-b", "127.0.0.1", "-p", str(port), "autoheal_site.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{base}/", timeout=2)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the web process did not start")
                time.sleep(0.2)
        refused = requests.get(f"{base}/events", timeout=10)
        assert refused.status_code in (401, 403)
        bad = requests.get(f"{base}/events", headers={"Authorization": "Bearer ahk_000000000000_nope"}, timeout=10)
        assert bad.status_code == 401
        with requests.get(
            f"{base}/events", headers={"Authorization": f"Bearer {key}"}, stream=True, timeout=10
        ) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            # The stream opens with a padding comment, then its first event.
            first: Any = next(line for line in response.iter_lines(decode_unicode=True) if line.startswith("event:"))
            assert first == "event: stream-open"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
