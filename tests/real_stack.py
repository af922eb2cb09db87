"""The deployed shape on loopback: gunicorn (deploy/gunicorn.conf.py), daphne, and the gateway.

Each server runs as its own process against the test database and Redis, on a port chosen here,
and is stopped by its pid. Used by the tests that probe the stack from outside, as a client would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from conftest import service_missing
from tests.live_stream_support import ROOT, process_env

GATEWAY_CONFIG = ROOT / "deploy" / "gateway" / "haproxy.cfg"
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
METRICS_TOKEN = "metrics-token-for-the-probe-tests-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        # Each server leads its own process group (gunicorn's workers are in it), stopped by its id.
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)

    def wait_ready(self, path: str = "/readyz", timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url(path), timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not answer: {self.log.read_text(errors='replace')[-3000:]}")


def _start(name: str, argv: list[str], env: dict[str, str], port: int, data_dir: Path) -> Server:
    log = data_dir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Server(name, port, proc, log)


def stack_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Production-like settings for the servers: the metrics token, explicit hosts, no DEBUG."""
    return process_env(
        data_dir,
        AUTOHEAL_METRICS_TOKEN=METRICS_TOKEN,
        AUTOHEAL_ALLOWED_HOSTS="127.0.0.1,localhost,autoheal-web,autoheal-stream",
        AUTOHEAL_DEBUG="false",
        **extra,
    )


@contextlib.contextmanager
def web_server(env: dict[str, str], data_dir: Path, threads: int = 4) -> Iterator[Server]:
    """gunicorn with the deployment's configuration file (one worker, ``threads`` threads)."""
    port = free_port()
    env = {
        **env,
        "AUTOHEAL_BIND": "127.0.0.1",
        "AUTOHEAL_PORT": str(port),
        "AUTOHEAL_WEB_WORKERS": "1",
        "AUTOHEAL_WEB_THREADS": str(threads),
    }
    argv = [str(Path(sys.executable).parent / "gunicorn"), "--config", str(GUNICORN_CONFIG)]
    server = _start("gunicorn", argv, env, port, data_dir)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def stream_server(env: dict[str, str], data_dir: Path) -> Iterator[Server]:
    """daphne, as the compose file runs it."""
    port = free_port()
    argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "autoheal_site.asgi:application"]
    server = _start("daphne", argv, env, port, data_dir)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def gateway(web: Server, stream: Server, data_dir: Path) -> Iterator[Server]:
    """The real haproxy with deploy/gateway/haproxy.cfg in front of ``web`` and ``stream``."""
    if not shutil.which("haproxy"):
        service_missing("haproxy not installed (the deploy gate installs it)")
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_BIND": f"127.0.0.1:{port}",
        "GATEWAY_WEB": f"127.0.0.1:{web.port}",
        "GATEWAY_STREAM": f"127.0.0.1:{stream.port}",
    }
    server = _start("haproxy", ["haproxy", "-db", "-f", str(GATEWAY_CONFIG)], env, port, data_dir)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def full_stack(**extra_env: str) -> Iterator[tuple[Server, Server, Server]]:
    """gunicorn, daphne and the gateway in front of both: (gateway, web, stream)."""
    data_dir = Path(tempfile.mkdtemp(prefix="autoheal-stack-"))
    env = stack_env(data_dir, AUTOHEAL_TRUSTED_PROXIES="127.0.0.1", **extra_env)
    with web_server(env, data_dir) as web, stream_server(env, data_dir) as stream, gateway(web, stream, data_dir) as gw:
        yield gw, web, stream
