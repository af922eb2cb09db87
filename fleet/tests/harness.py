"""A fleet on one machine, for the tests and the bench: private dockerds as hosts, one central, agents.

Each host is a private ``dockerd`` with its own socket, data-root, exec-root and pidfile (as
``scripts/services.sh`` starts one), loaded with the test image of the services' engine. The
central is a daphne process and a worker process on the test database; each agent is a real
``manage.py autoheal_agent`` process pointed at a database that does not exist, so a test also
shows that the agent needs none. Everything is stopped by PID and every container removed.
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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import requests

from remediation.tests.exec_helpers import stop_process

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("AUTOHEAL_TEST_IMAGE", "autoheal-test-busybox:latest")
# The agents are given a database that cannot exist: any query would fail their run.
NO_DATABASE = "postgres://nobody@127.0.0.1:1/no_database_for_agents"
WEBHOOK_TOKEN = "fleet-test-webhook-token-0123456789abcdef"


class DockerHost:
    """One private dockerd standing for one Docker host."""

    def __init__(self, name: str, base: Path) -> None:
        self.name = name
        self.dir = base / name
        self.dir.mkdir(parents=True)
        self.url = f"unix://{self.dir}/docker.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self.client: Any = None

    def start(self, image_source: Any) -> None:
        log = open(self.dir / "dockerd.log", "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                "dockerd",
                f"--host={self.url}",
                f"--data-root={self.dir}/data",
                f"--exec-root={self.dir}/exec",
                f"--pidfile={self.dir}/docker.pid",
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client = docker.DockerClient(base_url=self.url, timeout=60)
                self.client.ping()
                break
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"dockerd for host {self.name} did not start") from None
                time.sleep(0.2)
        self.client.images.load(b"".join(image_source.images.get(IMAGE).save(named=True)))

    def container(
        self, name: str, *, healthy: bool = True, init: bool = True, labels: dict[str, str] | None = None
    ) -> Any:
        """A running opted-in busybox container with a health check on /tmp/healthy."""
        return self.client.containers.run(
            IMAGE,
            ["sh", "-c", ("touch /tmp/healthy && " if healthy else "") + "exec sleep 100000"],
            name=name,
            labels={"autoheal.enable": "true", **(labels or {})},
            detach=True,
            init=init,
            network_mode="none",
            healthcheck={
                "test": ["CMD-SHELL", "test -f /tmp/healthy"],
                "interval": 500_000_000,
                "retries": 1,
            },
        )

    def started_at(self, name: str) -> str:
        return str(self.client.containers.get(name).attrs["State"]["StartedAt"])

    def health(self, name: str) -> str:
        return str((self.client.containers.get(name).attrs["State"].get("Health") or {}).get("Status", ""))

    def clear(self) -> None:
        for item in self.client.containers.list(all=True):
            item.remove(force=True)

    def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):  # best effort before the engine stops
                self.clear()
            self.client.close()
        if self.process is not None:
            stop_process(self.process, timeout=20)
        subprocess.run(["umount", f"{self.dir}/exec/netns/default"], capture_output=True, check=False)


class DockerHosts:
    """Several private dockerds, under one short directory (unix socket paths are short)."""

    def __init__(self, names: list[str]) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ahf-", dir="/tmp"))  # short socket paths
        self.hosts = {name: DockerHost(name, self.base) for name in names}

    def start(self, image_source: Any) -> None:
        for host in self.hosts.values():
            host.start(image_source)

    def __getitem__(self, name: str) -> DockerHost:
        return self.hosts[name]

    def stop(self) -> None:
        for host in self.hosts.values():
            host.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class FleetCentral:
    """The central web (daphne) and one central worker on the given database."""

    def __init__(self, *, database_url: str, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "AUTOHEAL_WEBHOOK_TOKENS": WEBHOOK_TOKEN,
            "AUTOHEAL_DATA_DIR": str(workdir / "data"),
            "AUTOHEAL_AUDIT_JSONL": str(workdir / "data" / "audit.jsonl"),
            "AUTOHEAL_WEBHOOK_RATE_LIMIT": "100000/60s",
            "AUTOHEAL_RATE_LIMIT": "100000/60s",
            "AUTOHEAL_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        # The central's own engine (local mode) is the services' engine; agents' hosts are others.
        if os.environ.get("AUTOHEAL_TEST_DOCKER_HOST"):
            self.env["DOCKER_HOST"] = os.environ["AUTOHEAL_TEST_DOCKER_HOST"]
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.url = ""

    def _spawn(self, args: list[str], log: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        with open(self.workdir / log, "wb") as out:
            process = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, **kwargs)
        self.processes.append(process)
        return process

    def start(self, *, worker: bool = True) -> None:
        sock = listening_socket()
        web = self._spawn(
            [sys.executable, "-m", "daphne", "--fd", str(sock.fileno()), "autoheal_site.asgi:application"],
            "web.log",
            pass_fds=(sock.fileno(),),
        )
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        sock.close()
        if worker:
            self._spawn([sys.executable, str(ROOT / "manage.py"), "autoheal_worker", "--name", "central"], "worker.log")
        deadline = time.monotonic() + 60
        while True:
            if web.poll() is not None:
                raise RuntimeError("the central web process exited: " + self.log("web.log"))
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the central web process did not answer: " + self.log("web.log"))
            time.sleep(0.2)

    def log(self, name: str) -> str:
        return (self.workdir / name).read_text(errors="replace")[-3000:]

    def alert(self, labels: dict[str, str], *, status: str = "firing", starts_at: str = "") -> requests.Response:
        """Deliver one Alertmanager-shaped alert to the central's webhook."""
        from remediation.docker_watch import fingerprint

        body = {
            "version": "4",
            "receiver": "autoheal",
            "status": status,
            "groupKey": "{}:{}",
            "groupLabels": {},
            "commonLabels": labels,
            "commonAnnotations": {},
            "externalURL": "",
            "truncatedAlerts": 0,
            "alerts": [
                {
                    "status": status,
                    "labels": labels,
                    "annotations": {},
                    "startsAt": starts_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                    "fingerprint": fingerprint(labels),
                }
            ],
        }
        return requests.post(
            self.url + "/alert", json=body, headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}, timeout=10
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_process(process)
        self.processes.clear()


class FleetAgents:
    """Agent processes of the hosts, started and stopped by PID."""

    def __init__(self, *, central: FleetCentral, hosts: DockerHosts, workdir: Path) -> None:
        self.central = central
        self.hosts = hosts
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.tokens: dict[str, str] = {}

    def start(self, name: str, *, token: str | None = None, server: str = "") -> subprocess.Popen[bytes]:
        token = token or self.tokens[name]
        env = {
            **os.environ,
            "DATABASE_URL": NO_DATABASE,
            "DOCKER_HOST": self.hosts[name].url,
            "AUTOHEAL_AGENT_TOKEN": token,
            # Its own spool, kept across restarts of the same host's agent.
            "AUTOHEAL_AGENT_STATE_DIR": str(self.state_dir(name)),
            "AUTOHEAL_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        log = open(self.workdir / f"agent-{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "autoheal_agent",
                "--server",
                server or self.central.url,
                "--host",
                name,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = process
        return process

    def state_dir(self, name: str) -> Path:
        return self.workdir / f"agent-{name}-state"

    def stop(self, name: str, *, sig: int = signal.SIGTERM) -> int:
        return stop_process(self.processes.pop(name), sig=sig)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.workdir / f"agent-{name}.log").read_text(errors="replace")[-3000:]


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30.0, step: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not within {timeout}s: {what or getattr(predicate, '__name__', predicate)}")


class CuttableProxy:
    """A loopback TCP forwarder to the central that a test can cut and restore (a network loss)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = listening_socket()
        self.port = self.listener.getsockname()[1]
        self.open = True
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        self.open = False
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()
