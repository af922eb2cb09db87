"""A real Alertmanager 0.25 for the silence tests: loopback port, private storage, gossip off.

Its only receiver is a loopback sink standing in for the people who get paged, so a test can see
whether Alertmanager notified them about an alert.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.test_e2e_prometheus import Processes, Sink, free_port, wait_for


@dataclass
class RunningAlertmanager:
    url: str
    sink: Sink
    processes: Processes

    def post_alert(self, labels: dict[str, str]) -> None:
        # Starting now: Alertmanager flushes an alert older than group_wait at once.
        starts = datetime.now(UTC)
        body = [{"labels": labels, "startsAt": starts.isoformat(), "endsAt": (starts + timedelta(hours=1)).isoformat()}]
        requests.post(f"{self.url}/api/v2/alerts", json=body, timeout=5).raise_for_status()

    def silence(self, *, matchers: list[dict[str, Any]], created_by: str, comment: str, minutes: int = 30) -> str:
        now = datetime.now(UTC)
        body = {
            "matchers": matchers,
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(minutes=minutes)).isoformat(),
            "createdBy": created_by,
            "comment": comment,
        }
        response = requests.post(f"{self.url}/api/v2/silences", json=body, timeout=5)
        response.raise_for_status()
        return str(response.json()["silenceID"])

    def silences(self) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v2/silences", timeout=5)
        response.raise_for_status()
        return list(response.json())

    def notified(self, alertname: str) -> bool:
        return alertname in self.sink.alertnames("people")


def _config(sink_port: int, group_wait: str) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "people",
            "group_by": ["alertname", "container"],
            "group_wait": group_wait,
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "people", "webhook_configs": [{"url": f"http://127.0.0.1:{sink_port}/people"}]},
        ],
    }


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[RunningAlertmanager]:
    processes = Processes(tmp_path)
    with Sink() as sink:
        port = free_port()
        config = tmp_path / "alertmanager.yml"
        config.write_text(yaml.safe_dump(_config(sink.port, "4s")))
        processes.start(
            "alertmanager",
            [
                "prometheus-alertmanager",
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(
                "Alertmanager to answer",
                lambda: requests.get(f"{url}/-/ready", timeout=2).status_code == 200,
                timeout=30,
                logs=processes.logs,
            )
            yield RunningAlertmanager(url=url, sink=sink, processes=processes)
        finally:
            processes.stop_all()
