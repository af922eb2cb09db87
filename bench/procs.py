"""Processes the benchmark starts: web servers, workers, watchers, all on loopback and free ports.

Everything started here is stopped here, by the process id this module got when it started it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
BENCH_TOKEN = "bench-webhook-token-not-a-secret"  # a throwaway token for the bench database only


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of every benchmark process: production-like, rate limits raised."""
    env = dict(os.environ)
    env.update(base)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "AUTOHEAL_DEBUG": "0",
            "AUTOHEAL_LOG_LEVEL": "WARNING",
            "AUTOHEAL_WEBHOOK_TOKENS": BENCH_TOKEN,
            # The benchmark is the only client: raise both limits far above its bounded load so
            # they measure the work, not the limiter (the limiter's own cost is still paid).
            "AUTOHEAL_RATE_LIMIT": "100000000/60s",
            "AUTOHEAL_WEBHOOK_RATE_LIMIT": "100000000/60s",
            # The stream benchmark opens hundreds of streams as one user; the cap is per user.
            "AUTOHEAL_STREAM_MAX_PER_USER": "100000",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@dataclass
class Started:
    """A group of processes serving one address (or none, for workers and watchers)."""

    name: str
    procs: list[subprocess.Popen[bytes]]
    port: int | None = None
    log: Path | None = None
    sockets: list[socket.socket] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def rss_mb(self) -> float:
        """Resident memory of these processes and all their children, in MiB."""
        return sum(tree_rss_kb(pid) for pid in self.pids) / 1024

    def largest_process_mb(self) -> float:
        """The largest single process among them and their children (one worker), in MiB."""
        tree = _children()
        largest = 0
        stack = list(self.pids)
        while stack:
            current = stack.pop()
            largest = max(largest, _rss_kb(current))
            stack.extend(tree.get(current, []))
        return largest / 1024

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    # Each process was started in its own session: its group id is its pid, so
                    # this reaches its own workers and nothing else.
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for sock in self.sockets:
            sock.close()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass  # gone meanwhile
    return 0


def tree_rss_kb(pid: int) -> int:
    """VmRSS of a process and its descendants, in KiB (0 when it is gone)."""
    tree = _children()
    total = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        total += _rss_kb(current)
        stack.extend(tree.get(current, []))
    return total


class RssSampler:
    """Samples the RSS of a started group in the background; keeps the peak."""

    def __init__(self, started: Started, every: float = 0.25) -> None:
        self.started = started
        self.every = every
        self.peak = 0.0
        self.peak_process = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.started.rss_mb())
            self.peak_process = max(self.peak_process, self.started.largest_process_mb())
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.started.rss_mb())


def _popen(argv: list[str], env: dict[str, str], log: Path, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    try:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            pass_fds=pass_fds,
            start_new_session=True,
        )
    finally:
        handle.close()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


# name -> how production would start it; every one serves the same Django project.
SERVERS: dict[str, str] = {
    "daphne-x1": "daphne, 1 process (ASGI)",
    "daphne-x2": "daphne, 2 processes sharing one socket (ASGI)",
    "uvicorn-x2": "uvicorn --workers 2, uvloop + httptools (ASGI)",
    "gunicorn-sync-x2": "gunicorn, 2 sync workers (WSGI)",
    "gunicorn-gthread-2x4": "gunicorn, 2 gthread workers x 4 threads (WSGI)",
    "gunicorn-sync-x2-nopool": "gunicorn, 2 sync workers, no DB pool (a connection per request)",
}


def start_server(kind: str, env: dict[str, str], logdir: Path) -> Started:
    """Start one serving configuration on a fresh loopback port and wait until it answers."""
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{kind}.log"
    log.write_bytes(b"")
    bin_ = VENV_BIN
    started: Started
    if kind == "daphne-x1":
        port = free_port()
        argv = [str(bin_ / "daphne"), "-b", "127.0.0.1", "-p", str(port), "autoheal_site.asgi:application"]
        started = Started(kind, [_popen(argv, env, log)], port, log)
    elif kind == "daphne-x2":
        # Two daphne processes accept on one inherited socket: the kernel spreads connections,
        # as two replicas behind a proxy would, without a proxy in the measurement.
        sock = _listening_socket()
        fd = sock.fileno()
        argv = [str(bin_ / "daphne"), "--fd", str(fd), "autoheal_site.asgi:application"]
        procs = [_popen(argv, env, log, (fd,)) for _ in range(2)]
        started = Started(kind, procs, sock.getsockname()[1], log, [sock])
    elif kind == "uvicorn-x2":
        port = free_port()
        argv = [
            str(bin_ / "uvicorn"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--lifespan",
            "off",
            "autoheal_site.asgi:application",
        ]
        started = Started(kind, [_popen(argv, env, log)], port, log)
    elif kind.startswith("gunicorn-"):
        port = free_port()
        argv = [
            str(bin_ / "gunicorn"),
            "--config",
            str(ROOT / "deploy" / "gunicorn.conf.py"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ]
        if "gthread" in kind:
            argv += ["--worker-class", "gthread", "--threads", "4"]
        else:
            argv += ["--worker-class", "sync"]
        argv.append("autoheal_site.wsgi:application")
        proc_env = dict(env)
        if kind.endswith("-nopool"):
            proc_env["AUTOHEAL_DB_POOL"] = "0"
        started = Started(kind, [_popen(argv, proc_env, log)], port, log)
    else:
        raise ValueError(f"unknown server kind {kind!r}; known: {', '.join(SERVERS)}")
    try:
        wait_ready(started)
    except Exception:
        started.stop()
        raise
    return started


def wait_ready(started: Started, timeout: float = 30.0) -> None:
    """Poll GET /readyz until it answers 200 (the database is reachable through the app)."""
    assert started.port is not None
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not started.alive():
            tail = started.log.read_text(errors="replace")[-2000:] if started.log else ""
            raise RuntimeError(f"{started.name} exited during start:\n{tail}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", started.port, timeout=2)
            conn.request("GET", "/readyz")
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status == 200:
                return
            last = f"HTTP {resp.status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{started.name} not ready after {timeout:.0f}s ({last})")


def start_manage(name: str, args: list[str], env: dict[str, str], logdir: Path) -> Started:
    """Start ``manage.py <args>`` (worker, watcher) in its own session."""
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{name}.log"
    log.write_bytes(b"")
    proc = _popen([sys.executable, str(ROOT / "manage.py"), *args], env, log)
    return Started(name, [proc], None, log)


@contextlib.contextmanager
def running(started: Started) -> Iterator[Started]:
    try:
        yield started
    finally:
        started.stop()
