"""A real Alertmanager delivers to POST /alert with its Bearer credentials file."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from remediation.models import Alert, Job, Policy

pytestmark = [pytest.mark.alertmanager, pytest.mark.django_db(transaction=True)]

TOKEN = "alertmanager-integration-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def alertmanager(tmp_path: Path, live_server: Any, settings: Any) -> Iterator[str]:
    settings.AUTOHEAL_WEBHOOK_TOKENS = ["previous-token", TOKEN]
    (tmp_path / "token").write_text(TOKEN + "\n")  # Alertmanager trims the trailing newline
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        f"""
route:
  receiver: autoheal
  group_by: [alertname, container]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: autoheal
    webhook_configs:
      - url: {live_server.url}/alert
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {tmp_path / "token"}
"""
    )
    port = _free_port()
    process = subprocess.Popen(
        [
            "prometheus-alertmanager",
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "alertmanager.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        _wait(ready, 30, "Alertmanager to start")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_alert_from_real_alertmanager_becomes_one_incident_one_job_and_resolves(alertmanager: str) -> None:
    Policy.objects.create(
        name="restart-unhealthy", matchers=['alertname="ContainerUnhealthy"'], action="restart_container"
    )
    starts = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    alert = {"labels": {"alertname": "ContainerUnhealthy", "container": "shop-api", "severity": "critical"}}
    posted = requests.post(f"{alertmanager}/api/v2/alerts", json=[{**alert, "startsAt": starts}], timeout=5)
    assert posted.status_code == 200

    _wait(lambda: Alert.objects.filter(alertname="ContainerUnhealthy").exists(), 30, "the firing delivery")
    incident = Alert.objects.get()
    assert incident.status == Alert.Status.FIRING
    assert incident.labels["container"] == "shop-api"
    assert list(Job.objects.values_list("target", flat=True)) == ["shop-api"]

    ended = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    requests.post(f"{alertmanager}/api/v2/alerts", json=[{**alert, "startsAt": starts, "endsAt": ended}], timeout=5)
    _wait(lambda: Alert.objects.filter(status=Alert.Status.RESOLVED).exists(), 30, "the resolved delivery")
    assert Alert.objects.count() == 1
    assert Job.objects.count() == 1
