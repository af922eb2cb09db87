"""A fault campaign: a mixed Alertmanager load while the services fail one after another.

``python -m bench.chaos`` (3 minutes) or ``python -m bench.chaos --seconds 60`` (the CI form).

It starts everything it uses, privately, and stops all of it by process id at the end, even on
failure: its own PostgreSQL cluster (initdb in a temporary directory, as the ``postgres`` OS user,
on a free loopback port), its own redis-server, its own dockerd (own socket, data and exec root),
two web processes sharing one listening socket, two workers and the Docker watcher. The JSONL
audit mirror lives on a small tmpfs it mounts and unmounts. Needs root (tmpfs, runuser).

While senders post new alerts, duplicates, resolutions and stale "firing after resolved" (retrying
every 5xx and refused connection as Alertmanager does), it injects, one after another:
PostgreSQL restarted (fast, then immediate shutdown), Redis killed and restarted, dockerd
restarted, a worker SIGKILLed while its action runs, a web process SIGKILLed, and the mirror's
filesystem full, then freed. At the end it checks and prints the invariants (see ``_check``) and,
per fault, how long it lasted, how long ingest and a whole remediation took to work again after it,
and how many of the deliveries first sent during it were answered 202 and stored exactly once; the
exit status is 0 only if every invariant holds.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.procs import BENCH_TOKEN, ROOT, VENV_BIN, free_port, server_env

PG_BIN = Path("/usr/lib/postgresql/15/bin")
IMAGE = "autoheal-chaos-busybox:latest"
CONTAINERS = 4
# The events that end an action try (what happened to it); others recorded during a try do not.
TRY_END_KINDS = frozenset({"action_ok", "action_fail", "action_retry", "action_unknown", "action_skipped"})
WEBHOOK_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "Alertmanager/0.25.0",
    "Authorization": f"Bearer {BENCH_TOKEN}",
}


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def run(argv: list[str], *, env: dict[str, str] | None = None, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:3])} failed ({proc.returncode}): {proc.stdout[-1500:]} {proc.stderr[-1500:]}"
        )
    return proc.stdout


class Stack:
    """What the campaign started; ``close`` stops each by its process id, newest first."""

    def __init__(self) -> None:
        self._closers: list[tuple[str, Callable[[], None]]] = []

    def on_close(self, name: str, closer: Callable[[], None]) -> None:
        self._closers.append((name, closer))

    def close(self) -> None:
        while self._closers:
            name, closer = self._closers.pop()
            try:
                closer()
            except Exception as exc:  # keep stopping the rest
                log(f"stopping {name}: {type(exc).__name__}: {exc}")


def stop_popen(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Stop a process this campaign started (its own session: its group is its pid alone)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def popen(argv: list[str], logfile: Path, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[bytes]:
    handle = open(logfile, "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kw,
        )
    finally:
        handle.close()


# --- Private services -----------------------------------------------------------------------


class Postgres:
    """A private PostgreSQL 15 cluster in ``root``, owned by the postgres OS user."""

    def __init__(self, root: Path) -> None:
        self.data = root / "pgdata"
        self.sockets = root / "pgsock"
        self.logfile = root / "postgres.log"
        self.port = free_port()

    def _as_postgres(self, *argv: str, timeout: float = 120) -> str:
        return run(["runuser", "-u", "postgres", "--", *argv], timeout=timeout)

    def init(self) -> None:
        for path in (self.data, self.sockets):
            path.mkdir()
            shutil.chown(path, "postgres", "postgres")
        self.logfile.touch()
        shutil.chown(self.logfile, "postgres", "postgres")
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    def _ctl(self, *argv: str) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            *argv,
        )

    def start(self) -> None:
        self._ctl("start")

    def restart(self, mode: str) -> None:
        self._ctl("restart", "-m", mode)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._ctl("stop", "-m", "fast")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/autoheal"

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(f"postgres://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE autoheal")


class Redis:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.logfile = root / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = popen(argv, self.logfile)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            stop_popen(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            stop_popen(self.proc)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Dockerd:
    def __init__(self, root: Path) -> None:
        self.dir = root / "docker"
        self.dir.mkdir()
        self.sock = self.dir / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> None:
        argv = [
            "dockerd",
            f"--host={self.host}",
            f"--data-root={self.dir / 'data'}",
            f"--exec-root={self.dir / 'exec'}",
            f"--pidfile={self.dir / 'docker.pid'}",
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
        ]
        self.proc = popen(argv, self.dir / "dockerd.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.2)
        raise RuntimeError("dockerd did not start")

    def ping(self) -> bool:
        import docker

        try:
            client = docker.DockerClient(base_url=self.host, timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_popen(self.proc, timeout=30)
        with contextlib.suppress(Exception):
            subprocess.run(["umount", str(self.dir / "exec" / "netns" / "default")], capture_output=True, check=False)

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, timeout=60)

    def import_busybox(self) -> None:
        busybox = shutil.which("busybox")
        if not busybox:
            raise RuntimeError("busybox-static is not installed")
        with tempfile.TemporaryDirectory() as rootfs:
            base = Path(rootfs)
            for sub in ("bin", "etc", "tmp", "proc", "sys", "dev", "starts"):
                (base / sub).mkdir()
            shutil.copy(busybox, base / "bin" / "busybox")
            for applet in run([busybox, "--list"]).split():
                if applet != "busybox":
                    (base / "bin" / applet).symlink_to("busybox")
            (base / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
            (base / "etc" / "group").write_text("root:x:0:\n")
            os.chmod(base / "tmp", 0o1777)  # noqa: S103 - /tmp inside the image
            tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
            assert tar.stdout is not None
            subprocess.run(
                ["docker", "-H", self.host, "import", "-c", 'CMD ["/bin/sh"]', "-c", "ENV PATH=/bin", "-", IMAGE],
                stdin=tar.stdout,
                capture_output=True,
                check=True,
            )
            tar.wait()


# --- The application ------------------------------------------------------------------------


@dataclass
class App:
    env: dict[str, str]
    logdir: Path
    sock: socket.socket
    webs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    watcher: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start_web(self) -> subprocess.Popen[bytes]:
        fd = self.sock.fileno()
        argv = [str(VENV_BIN / "daphne"), "--fd", str(fd), "autoheal_site.asgi:application"]
        proc = popen(argv, self.logdir / "web.log", self.env, pass_fds=(fd,))
        self.webs.append(proc)
        return proc

    def start_worker(self, name: str) -> None:
        argv = [sys.executable, str(ROOT / "manage.py"), "autoheal_worker", "--name", name]
        self.workers[name] = popen(argv, self.logdir / f"{name}.log", self.env)

    def start_watcher(self) -> None:
        argv = [sys.executable, str(ROOT / "manage.py"), "autoheal_watch_docker"]
        self.watcher = popen(argv, self.logdir / "watcher.log", self.env)

    def manage(self, *args: str, check: bool = True) -> str:
        return run([sys.executable, str(ROOT / "manage.py"), *args], env=self.env, check=check, timeout=300)

    def stop(self) -> None:
        for proc in [*self.webs, *self.workers.values(), *([self.watcher] if self.watcher else [])]:
            stop_popen(proc)
        self.sock.close()


def http_call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --- The load -------------------------------------------------------------------------------


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Ledger:
    """What the senders were told: keys answered 202, and answers that must never happen."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: set[tuple[str, str]] = field(default_factory=set)
    # The phase a delivery was first sent in: before the first fault, or during/after fault N.
    phase: str = "before the faults"
    accepted_in: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    retried_in: dict[str, int] = field(default_factory=dict)
    deliveries: int = 0
    retries: int = 0
    refused: list[str] = field(default_factory=list)  # 4xx answers: a loss for Alertmanager
    gave_up: int = 0
    last_ok: float = 0.0


class Load:
    """Senders posting a mixed Alertmanager load, each retrying a delivery until it is answered."""

    def __init__(self, port: int, containers: list[str], ledger: Ledger, *, senders: int = 2) -> None:
        self.port = port
        self.containers = containers
        self.ledger = ledger
        self.stop = threading.Event()
        self.deadline = float("inf")  # retries end here (set when the load stops)
        self.firing: list[dict[str, Any]] = []
        self.resolved: list[dict[str, Any]] = []
        self._pick = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(senders)]
        self.restart_every = 6.0
        self._last_restart = 0.0

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=120)

    def _alert(self, alertname: str, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "status": "firing",
            "labels": {"alertname": alertname, **labels},
            "annotations": {"summary": "chaos"},
            "startsAt": _ts(datetime.now(UTC)),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.invalid/graph",
            "fingerprint": uuid.uuid4().hex[:16],
        }

    def _next(self, rng: random.Random) -> dict[str, Any]:
        with self._pick:
            now = time.monotonic()
            if now - self._last_restart >= self.restart_every:
                self._last_restart = now
                if rng.random() < 0.2:
                    alert = self._alert("ChaosDown", {"container": f"nosuch-{uuid.uuid4().hex[:6]}"})
                else:
                    alert = self._alert("ChaosDown", {"container": rng.choice(self.containers)})
                return alert
            roll = rng.random()
            if roll < 0.2 and self.firing:
                return dict(rng.choice(self.firing))  # a duplicate (group_interval resend)
            if roll < 0.35 and self.firing:
                alert = self.firing.pop(rng.randrange(len(self.firing)))
                done = {**alert, "status": "resolved", "endsAt": _ts(datetime.now(UTC))}
                self.resolved.append(alert)
                return done
            if roll < 0.4 and self.resolved:
                return dict(rng.choice(self.resolved))  # stale firing after the resolution
            alert = self._alert("ChaosNote", {"instance": f"node-{rng.randrange(50)}"})
            self.firing.append(alert)
            if len(self.firing) > 200:
                self.firing.pop(0)
            return alert

    def _run(self, number: int) -> None:
        rng = random.Random(number)
        while not self.stop.is_set():
            alert = self._next(rng)
            self.deliver(alert)
            self.stop.wait(0.1)

    def deliver(self, alert: dict[str, Any]) -> bool:
        body = json.dumps(
            {
                "version": "4",
                "status": alert["status"],
                "receiver": "autoheal",
                "groupKey": '{}:{alertname="' + alert["labels"]["alertname"] + '"}',
                "truncatedAlerts": 0,
                "groupLabels": {},
                "commonLabels": {},
                "commonAnnotations": {},
                "externalURL": "http://alertmanager.invalid",
                "alerts": [alert],
            }
        ).encode()
        key = (alert["fingerprint"], alert["startsAt"])
        first = True
        with self.ledger.lock:
            phase = self.ledger.phase
        while True:
            try:
                status, answer = http_call(self.port, "POST", "/alert", body, WEBHOOK_HEADERS)
            except OSError:
                status, answer = 0, b""
            with self.ledger.lock:
                self.ledger.deliveries += first
                self.ledger.retries += not first
                self.ledger.retried_in[phase] = self.ledger.retried_in.get(phase, 0) + (not first)
                if status == 202:
                    self.ledger.accepted.add(key)
                    self.ledger.accepted_in.setdefault(phase, set()).add(key)
                    self.ledger.last_ok = time.monotonic()
                    return True
                if 400 <= status < 500:
                    self.ledger.refused.append(f"{status} {answer[:200]!r}")
                    return False
            first = False
            if time.monotonic() > self.deadline:
                with self.ledger.lock:
                    self.ledger.gave_up += 1
                return False
            time.sleep(0.5)  # Alertmanager's retry backoff, shortened


class StreamClient:
    """An SSE client of /events that reconnects with Last-Event-ID and records every id it saw."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key
        self.ids: list[int] = []
        self.reconnects = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError, http.client.HTTPException):
                self._read()
            if self.stop.is_set():
                return
            self.reconnects += 1
            self.stop.wait(0.5)

    def _read(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream"}
        if self.ids:
            headers["Last-Event-ID"] = str(self.ids[-1])
        try:
            conn.request("GET", "/events", headers=headers)
            resp = conn.getresponse()
            if resp.status != 200:
                resp.read()
                return
            # Hang up every 20 s, as a proxy's timeout would: each reconnect resumes by Last-Event-ID.
            until = time.monotonic() + 20
            while not self.stop.is_set() and time.monotonic() < until:
                line = resp.readline()
                if not line:
                    return
                if line.startswith(b"id:"):
                    self.ids.append(int(line[3:].strip()))
        finally:
            conn.close()


# --- Faults ---------------------------------------------------------------------------------


@dataclass
class FaultResult:
    name: str
    injected_at: float
    fault_s: float = 0.0  # how long the fault itself lasted (injection to restoration)
    ingest_recovered_s: float | None = None
    end_to_end_s: float | None = None
    notes: list[str] = field(default_factory=list)


class Campaign:
    def __init__(self, seconds: int, workdir: Path) -> None:
        self.seconds = seconds
        self.root = workdir
        self.stack = Stack()
        self.results: list[FaultResult] = []
        self.ledger = Ledger()
        self.dockerd_restart_starts: dict[str, int] = {}
        self.per_phase: dict[str, dict[str, int]] = {}
        # Per container: the wall-clock windows in which the campaign itself started it.
        self.campaign_windows: dict[str, list[tuple[float, float]]] = {}

    # setup

    def setup(self) -> None:
        root = self.root
        os.chmod(root, 0o755)  # noqa: S103 - the postgres OS user must reach its data directory
        self.logdir = root / "logs"
        self.logdir.mkdir()
        self.pg = Postgres(root)
        self.pg.init()
        self.pg.start()
        self.stack.on_close("postgres", self.pg.stop)
        self.pg.create_database()
        self.redis = Redis(root)
        self.redis.start()
        self.stack.on_close("redis", self.redis.stop)
        self.dockerd = Dockerd(root)
        self.dockerd.start()
        self.stack.on_close("dockerd", self.dockerd.stop)
        self.dockerd.import_busybox()
        self.mirror_dir = root / "mirror"
        self.mirror_dir.mkdir()
        run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(self.mirror_dir)])
        self.stack.on_close("tmpfs", self._unmount)
        self.mirror = self.mirror_dir / "audit.jsonl"
        self.starts_dir = root / "starts"
        self.starts_dir.mkdir()
        self.containers = self._make_containers()
        self.stack.on_close("containers", self._remove_containers)
        env = server_env(
            {},
            DATABASE_URL=self.pg.url,
            REDIS_URL=self.redis.url,
            DOCKER_HOST=self.dockerd.host,
            AUTOHEAL_AUDIT_JSONL=str(self.mirror),
            AUTOHEAL_LEASE_SECONDS="6",
            AUTOHEAL_WORKER_POLL_SECONDS="1",
            AUTOHEAL_CIRCUIT_MAX_ACTIONS="100000",
            AUTOHEAL_CIRCUIT_MAX_FAILURES="100000",
            AUTOHEAL_BACKOFF_BASE_SECONDS="1",
            AUTOHEAL_BACKOFF_MAX_SECONDS="2",
            AUTOHEAL_BACKOFF_RESET_SECONDS="5",
            AUTOHEAL_STREAM_KEEPALIVE_SECONDS="5",
            AUTOHEAL_SELF_CONTAINER="",
            AUTOHEAL_LOG_LEVEL="WARNING",
        )
        for name in ("AUTOHEAL_TEST_DATABASE_URL", "AUTOHEAL_TEST_REDIS_URL", "AUTOHEAL_TEST_DOCKER_HOST"):
            env.pop(name, None)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        sock.set_inheritable(True)
        self.app = App(env=env, logdir=self.logdir, sock=sock)
        self.stack.on_close("application", self.app.stop)
        self.app.manage("migrate", "--noinput")
        policies = self.root / "policies.yaml"
        policies.write_text(
            "policies:\n"
            "  - name: chaos-restart\n"
            "    matchers: ['alertname=\"ChaosDown\"']\n"
            "    action: restart_container\n"
            "    target: '{{ labels.container }}'\n"
            "    params: {stop_timeout_seconds: 2, timeout_seconds: 30}\n"
            "    cooldown_seconds: 0\n"
            "    max_actions_per_hour: 100000\n"
            "  - name: chaos-note\n"
            "    matchers: ['alertname=\"ChaosNote\"']\n"
            "    action: log_only\n"
            "    target: '{{ labels.instance }}'\n"
        )
        self.app.manage("autoheal_policies", "import", str(policies))
        key = self.app.manage("autoheal_apikey", "create", "--name", "chaos-stream", "--role", "ops").strip()
        for _ in range(2):
            self.app.start_web()
        self.app.start_worker("chaos-worker-1")
        self.app.start_worker("chaos-worker-2")
        self.app.start_watcher()
        self._wait_ready()
        self.stream = StreamClient(self.app.port, key)
        self.stream.thread.start()

    def _unmount(self) -> None:
        run(["umount", "-l", str(self.mirror_dir)], check=False)

    def _make_containers(self) -> list[str]:
        client = self.dockerd.client()
        names = []
        try:
            for index in range(CONTAINERS):
                name = f"chaos-{index}"
                starts = self.starts_dir / name
                starts.mkdir()
                # No --init: the shell as PID 1 ignores SIGTERM, so a restart takes its stop
                # timeout (2 s): a window in which a worker can be killed mid-action.
                client.containers.run(
                    IMAGE,
                    ["sh", "-c", "date +%s >> /starts/log; touch /tmp/healthy; while true; do sleep 1; done"],
                    name=name,
                    detach=True,
                    labels={"autoheal.enable": "true"},
                    network_mode="none",
                    volumes={str(starts): {"bind": "/starts", "mode": "rw"}},
                    healthcheck={
                        "test": ["CMD", "test", "-f", "/tmp/healthy"],
                        "interval": 1_000_000_000,
                        "retries": 1,
                    },
                )
                names.append(name)
        finally:
            client.close()
        return names

    def _remove_containers(self) -> None:
        if not self.dockerd.ping():
            return
        client = self.dockerd.client()
        try:
            for container in client.containers.list(all=True):
                container.remove(force=True)
        finally:
            client.close()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_call(self.app.port, "GET", "/readyz", timeout=3)[0] == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("the web processes did not become ready")

    # the database, read directly

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.pg.url.replace("postgres://", "postgresql://"), connect_timeout=5) as conn:
            return list(conn.execute(sql, params).fetchall())

    # faults

    def _probe(self, result: FaultResult) -> None:
        """After the fault ends: time until a fresh alert is answered 202, then until its job finished."""
        fingerprint = uuid.uuid4().hex[:16]
        alert = {
            "status": "firing",
            "labels": {"alertname": "ChaosNote", "instance": "probe"},
            "annotations": {},
            "startsAt": _ts(datetime.now(UTC)),
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fingerprint,
        }
        probe = Load(self.app.port, self.containers, self.ledger, senders=0)
        probe.deadline = time.monotonic() + 90
        if probe.deliver(alert):
            result.ingest_recovered_s = round(time.monotonic() - result.injected_at, 2)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                rows = self.query(
                    "SELECT j.state FROM remediation_job j JOIN remediation_alert a ON a.id = j.alert_id "
                    "WHERE a.fingerprint = %s",
                    (fingerprint,),
                )
                if rows and all(state not in ("queued", "running") for (state,) in rows):
                    result.end_to_end_s = round(time.monotonic() - result.injected_at, 2)
                    return
            time.sleep(0.2)
        result.notes.append("the probe's job did not finish within 90 s")

    def fault(self, name: str, inject: Callable[[FaultResult], None]) -> None:
        result = FaultResult(name=name, injected_at=time.monotonic())
        with self.ledger.lock:
            self.ledger.phase = name
        log(f"fault: {name}")
        inject(result)
        restored = time.monotonic()
        result.fault_s = round(restored - result.injected_at, 2)
        result.injected_at = restored
        self._probe(result)
        log(
            f"  lasted {result.fault_s}s; then ingest back in {result.ingest_recovered_s}s, "
            f"end to end in {result.end_to_end_s}s {result.notes or ''}"
        )
        self.results.append(result)

    def pg_restart(self, mode: str) -> Callable[[FaultResult], None]:
        def inject(result: FaultResult) -> None:
            self.pg.restart(mode)

        return inject

    def redis_restart(self, result: FaultResult) -> None:
        self.redis.kill()
        time.sleep(2)
        self.redis.start()

    def dockerd_restart(self, result: FaultResult) -> None:
        stopping = _ts(datetime.now(UTC))
        self.dockerd.stop()
        self.dockerd.start()
        result.notes.append(f"engine stopped at {stopping}, back at {_ts(datetime.now(UTC))}")
        # Without live-restore the containers stopped with the engine: start them again, and count
        # those starts so they are not taken for actions.
        client = self.dockerd.client()
        try:
            for name in self.containers:
                container = client.containers.get(name)
                if container.status != "running":
                    before = time.time()
                    container.start()
                    self.dockerd_restart_starts[name] = self.dockerd_restart_starts.get(name, 0) + 1
                    self.campaign_windows.setdefault(name, []).append((before, time.time()))
        finally:
            client.close()

    def worker_kill(self, result: FaultResult) -> None:
        target = self.containers[0]
        alert = Load(self.app.port, self.containers, self.ledger, senders=0)._alert("ChaosDown", {"container": target})
        threading.Thread(
            target=Load(self.app.port, self.containers, self.ledger, senders=0).deliver, args=(alert,)
        ).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = self.query(
                "SELECT lease_owner FROM remediation_job WHERE state = 'running' AND started_at IS NOT NULL "
                "AND action = 'restart_container'"
            )
            owners = [owner for (owner,) in rows if owner in self.app.workers]
            if owners:
                victim = owners[0]
                stop_popen(self.app.workers[victim], signal.SIGKILL)
                result.notes.append(f"SIGKILLed {victim} mid-action")
                self.app.start_worker(victim + "-again")
                return
            time.sleep(0.05)
        result.notes.append("no action was running within 30 s: no worker was killed")

    def web_kill(self, result: FaultResult) -> None:
        victim = self.app.webs.pop(0)
        stop_popen(victim, signal.SIGKILL)
        self.app.start_web()

    def disk_full(self, result: FaultResult) -> None:
        filler = self.mirror_dir / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=64"], capture_output=True, check=False)
        time.sleep(4)  # the load goes on while the mirror cannot be written
        filler.unlink()

    # the run

    def execute(self) -> int:
        self.setup()
        self.load = Load(self.app.port, self.containers, self.ledger)
        started = time.monotonic()
        self.load.start()
        faults: list[tuple[str, Callable[[FaultResult], None]]] = [
            ("PostgreSQL restart (fast shutdown)", self.pg_restart("fast")),
            ("PostgreSQL restart (immediate shutdown)", self.pg_restart("immediate")),
            ("Redis killed and restarted", self.redis_restart),
            ("dockerd restarted", self.dockerd_restart),
            ("worker SIGKILLed mid-action", self.worker_kill),
            ("web process SIGKILLed", self.web_kill),
            ("JSONL mirror filesystem full, then freed", self.disk_full),
        ]
        spacing = self.seconds / (len(faults) + 1)
        for index, (name, inject) in enumerate(faults):
            due = started + spacing * (index + 1) - spacing / 2
            time.sleep(max(0.0, due - time.monotonic()))
            self.fault(name, inject)
        time.sleep(max(0.0, started + self.seconds - time.monotonic()))
        log("load stops; waiting for the retries and the jobs to finish")
        self.load.deadline = time.monotonic() + 60
        self.load.stop.set()
        self.load.join()
        return self._check()

    def _settle(self, timeout: float = 120) -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + timeout
        rows: list[tuple[Any, ...]] = []
        while time.monotonic() < deadline:
            rows = self.query("SELECT id, state FROM remediation_job WHERE state IN ('queued', 'running')")
            if not rows:
                return rows
            time.sleep(1)
        return rows

    def _check(self) -> int:
        checks: list[tuple[str, bool, str]] = []
        pending = self._settle()
        checks.append(("every job is terminal", not pending, f"{len(pending)} not terminal" if pending else ""))

        accepted = sorted(self.ledger.accepted)
        stored: dict[tuple[str, str], int] = {}
        for fingerprint, starts_at, count in self.query(
            "SELECT fingerprint, starts_at, count(*) FROM remediation_alert GROUP BY fingerprint, starts_at"
        ):
            stored[(fingerprint, _ts(starts_at))] = count
        missing = [key for key in accepted if stored.get(_norm(key)) != 1]
        # Per phase (before the faults, then each fault until the next): accepted, stored once, retried.
        self.per_phase = {
            phase: {
                "accepted": len(keys),
                "stored_once": sum(1 for key in keys if stored.get(_norm(key)) == 1),
                "retried": self.ledger.retried_in.get(phase, 0),
            }
            for phase, keys in self.ledger.accepted_in.items()
        }
        checks.append(
            (
                "every alert answered 202 is stored exactly once",
                not missing,
                f"{len(accepted)} accepted incidents; {len(missing)} missing or repeated"
                + (f": {missing[:3]}" if missing else ""),
            )
        )
        checks.append(
            ("no delivery was refused with a 4xx", not self.ledger.refused, "; ".join(self.ledger.refused[:3]))
        )
        checks.append(("no delivery was given up", self.ledger.gave_up == 0, f"{self.ledger.gave_up} given up"))

        unexplained, detail = self._attribute_starts()
        checks.append(
            (
                "no job ran twice (each container start is one action try or a campaign start)",
                not unexplained,
                "; ".join(detail) + (f"; unexplained starts: {unexplained}" if unexplained else ""),
            )
        )
        self.restart_history = self._restart_history()
        skipped = self.query("SELECT count(*) FROM remediation_job WHERE skip_reason = 'target_missing'")[0][0]
        checks.append(("missing containers were skipped, not failed", True, f"{skipped} target_missing skips"))

        verify = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "audit_verify"],
            env=self.app.env,
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            timeout=300,
        )
        last_line = (verify.stdout.strip() or verify.stderr.strip()).splitlines()[-1:] or [""]
        checks.append(("audit_verify passes", verify.returncode == 0, last_line[0]))

        table_ids = [row[0] for row in self.query("SELECT id FROM audit_auditevent ORDER BY id")]
        gap = self._mirror_gap(table_ids)
        if gap:
            self.app.manage("audit_export", "--output", str(self.mirror))
            after = self._mirror_gap(table_ids)
            checks.append(
                (
                    "the JSONL mirror equals the table after recovery",
                    not after,
                    f"{len(gap)} events missing from the mirror after the disk-full fault; "
                    f"`manage.py audit_export --output MIRROR` repaired it ({len(after)} missing after)",
                )
            )
        else:
            checks.append(("the JSONL mirror equals the table after recovery", True, f"{len(table_ids)} events"))

        time.sleep(3)
        self.stream.stop.set()
        seen = self.stream.ids
        ordered = all(a < b for a, b in itertools.pairwise(seen))
        expected = [i for i in table_ids if seen and seen[0] <= i <= seen[-1]]
        checks.append(
            (
                "the stream client saw every event id in order across its reconnects",
                bool(seen) and ordered and seen == expected and self.stream.reconnects > 0,
                f"{len(seen)} ids, {self.stream.reconnects} reconnects"
                + ("" if seen == expected else f"; {len(set(expected) - set(seen))} missed"),
            )
        )
        self._report(checks)
        return 0 if all(ok for _, ok, _ in checks) else 1

    def _tries(self) -> dict[str, list[tuple[int, float, float]]]:
        """Per container: each restart try as (job, started, ended) in epoch seconds.

        A try begins at an ``action_started`` and ends at that job's next outcome (ok, fail, retry,
        unknown, skipped); events recorded during the try (``evidence_captured`` before the action,
        silences) do not end it. A try that never ended is open until now.
        """
        rows = self.query(
            "SELECT e.target, (e.data->>'job')::int, e.kind, extract(epoch FROM e.ts)::float8 FROM audit_auditevent e "
            "WHERE e.data ? 'job' AND e.target LIKE 'chaos-%%' ORDER BY e.id"
        )
        tries: dict[str, list[tuple[int, float, float]]] = {}
        open_tries: dict[int, tuple[str, float]] = {}
        for target, job, kind, ts in rows:
            if job in open_tries and kind in TRY_END_KINDS:
                name, started = open_tries.pop(job)
                tries.setdefault(name, []).append((job, started, ts))
            if kind == "action_started":
                open_tries[job] = (target, ts)
        for job, (name, started) in open_tries.items():
            tries.setdefault(name, []).append((job, started, time.time()))
        return tries

    def _attribute_starts(self) -> tuple[list[str], list[str]]:
        """Match every container start after the first to one action try or one campaign start.

        Starts are logged by the container itself (whole seconds), so a start matches a window
        that contains it within a second. Each try and each campaign start explains at most one
        start (a bipartite matching): a start left over means some action ran more than once.
        """
        tries = self._tries()
        unexplained: list[str] = []
        detail: list[str] = []
        for name in self.containers:
            log = self.starts_dir / name / "log"
            starts = [int(x) for x in log.read_text().split()][1:] if log.exists() else []
            windows = [(f"job {job}", a, b) for job, a, b in tries.get(name, [])]
            windows += [("campaign", a, b) for a, b in self.campaign_windows.get(name, [])]
            owner: dict[int, int] = {}  # window index -> start index

            def place(
                start: int,
                seen: set[int],
                starts: list[int] = starts,
                windows: list = windows,
                owner: dict[int, int] = owner,
            ) -> bool:
                for w, (_, a, b) in enumerate(windows):
                    if w in seen or not int(a) - 1 <= starts[start] <= b + 1:
                        continue
                    seen.add(w)
                    if w not in owner or place(owner[w], seen):
                        owner[w] = start
                        return True
                return False

            left = [i for i in range(len(starts)) if not place(i, set())]
            job_tries = [label for label, _, _ in windows if label != "campaign"]
            detail.append(
                f"{name}: {len(starts)} starts after the first, for {len(job_tries)} tries of {len(set(job_tries))} "
                f"jobs and {len(windows) - len(job_tries)} campaign starts"
            )
            unexplained += [f"{name} at {datetime.fromtimestamp(starts[i], UTC):%H:%M:%S}" for i in left]
        return unexplained, detail

    def _restart_history(self) -> dict[str, Any]:
        """Per container: its start times and each restart job's audit trail, to explain a count."""
        events: dict[int, list[str]] = {}
        for job, kind, ts, message in self.query(
            "SELECT (data->>'job')::int, kind, ts, message FROM audit_auditevent "
            "WHERE data ? 'job' AND target LIKE 'chaos-%%' ORDER BY id"
        ):
            events.setdefault(job, []).append(f"{_ts(ts)} {kind} {message[:120]}")
        jobs = self.query(
            "SELECT id, target, state, attempts FROM remediation_job WHERE action = 'restart_container' "
            "AND target LIKE 'chaos-%%' ORDER BY id"
        )
        history: dict[str, Any] = {}
        for name in self.containers:
            log = self.starts_dir / name / "log"
            history[name] = {
                "starts": log.read_text().split() if log.exists() else [],
                "campaign_starts": self.dockerd_restart_starts.get(name, 0),
                "jobs": [
                    {"job": job, "state": state, "tries": tries, "events": events.get(job, [])}
                    for job, target, state, tries in jobs
                    if target == name
                ],
            }
        return history

    def _mirror_gap(self, table_ids: list[int]) -> list[int]:
        mirrored: set[int] = set()
        if self.mirror.exists():
            for line in self.mirror.read_text(encoding="utf-8", errors="replace").splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    mirrored.add(int(json.loads(line)["id"]))
        return [i for i in table_ids if i not in mirrored]

    def _report(self, checks: list[tuple[str, bool, str]]) -> None:
        print()
        print(f"Fault campaign: {self.seconds} s, {self.ledger.deliveries} deliveries, {self.ledger.retries} retries")
        header = f"{'phase':45} {'lasted (s)':>10} {'ingest back (s)':>16} {'end to end (s)':>15}"
        print(f"{header} {'202 / stored once':>18} {'retried':>8}  notes")
        for r in [FaultResult(name="before the faults", injected_at=0.0), *self.results]:
            counts = self.per_phase.get(r.name, {"accepted": 0, "stored_once": 0, "retried": 0})
            stored = f"{counts['accepted']} / {counts['stored_once']}"
            before = r.name == "before the faults"
            lasted, ingest, end = ("-", "-", "-") if before else (r.fault_s, r.ingest_recovered_s, r.end_to_end_s)
            print(
                f"{r.name:45} {lasted!s:>10} {ingest!s:>16} {end!s:>15} {stored:>18} {counts['retried']:>8}  "
                + "; ".join(r.notes)
            )
        print()
        for name, ok, detail in checks:
            print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""))
        print()
        print("all invariants hold" if all(ok for _, ok, _ in checks) else "SOME INVARIANTS FAILED")
        summary = {
            "seconds": self.seconds,
            "deliveries": self.ledger.deliveries,
            "retries": self.ledger.retries,
            "faults": [r.__dict__ for r in self.results],
            "per_phase": self.per_phase,
            "restart_history": getattr(self, "restart_history", {}),
            "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in checks],
        }
        (self.root / "result.json").write_text(json.dumps(summary, indent=2, default=str))
        self.summary = summary


def _norm(key: tuple[str, str]) -> tuple[str, str]:
    fingerprint, starts_at = key
    moment = datetime.fromisoformat(starts_at.replace("Z", "+00:00"))
    return fingerprint, _ts(moment)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=180, help="length of the load (default 180)")
    parser.add_argument("--json", help="also write the figures and checks as JSON to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the fault campaign needs root (it mounts a tmpfs and runs PostgreSQL as postgres)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="ahc-", dir="/tmp"))
    campaign = Campaign(args.seconds, workdir)
    try:
        status = campaign.execute()
        if args.json:
            Path(args.json).write_text(json.dumps(campaign.summary, indent=2, default=str))
        return status
    finally:
        campaign.stack.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
