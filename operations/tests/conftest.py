"""A real Prometheus on a free loopback port, for the canary gate and the TSDB snapshot."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests


@dataclass
class RunningPrometheus:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    def wait_for(self, ready: Callable[[], bool], what: str, limit: float = 30.0) -> None:
        """Poll until ``ready()``; bounded, so a broken Prometheus fails the test instead of hanging it."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"prometheus exited with {self.process.returncode} while waiting for {what}")
            try:
                if ready():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus: timed out waiting for {what}")

    def api(self, path: str) -> dict:
        response = requests.get(self.url + path, timeout=5)
        response.raise_for_status()
        return response.json()["data"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[..., RunningPrometheus]]:
    """``prometheus(rules_yaml, admin_api=False)`` starts Prometheus evaluating the rules every second."""
    started: list[subprocess.Popen[bytes]] = []

    def start(rules: str, *, admin_api: bool = False) -> RunningPrometheus:
        home = tmp_path / f"prometheus-{len(started)}"
        (home / "data").mkdir(parents=True)
        (home / "rules.yml").write_text(rules, encoding="utf-8")
        (home / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n",
            encoding="utf-8",
        )
        port = _free_port()
        argv = [
            "prometheus",
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--rules.alert.resend-delay=1s",
        ]
        if admin_api:
            argv.append("--web.enable-admin-api")
        log = open(home / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        started.append(process)
        running = RunningPrometheus(url=f"http://127.0.0.1:{port}", data_dir=home / "data", process=process)
        running.wait_for(lambda: requests.get(running.url + "/-/ready", timeout=1).status_code == 200, "ready")
        return running

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
