"""Webhook bodies shaped like the real Alertmanager deliveries in tests/fixtures/alertmanager."""

from __future__ import annotations

import copy
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import ID_MARK
from bench.procs import ROOT

FIXTURES = Path(os.environ.get("AUTOHEAL_BENCH_FIXTURES", ROOT / "tests" / "fixtures" / "alertmanager"))


def fixture(name: str) -> dict[str, Any]:
    path = FIXTURES / name
    if not path.exists():
        raise FileNotFoundError(f"Alertmanager fixture {name} not found in {FIXTURES}")
    return json.loads(path.read_bytes())


def _am_json(body: dict[str, Any]) -> str:
    # Alertmanager sends compact JSON ending with a newline; its encoder escapes <, > and &.
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") + "\n"


def batch_template(size: int = 10, alertname: str = "ContainerOOMKilled") -> str:
    """A firing group of ``size`` alerts built from group-five-firing.json, every fingerprint and
    ``container`` label carrying ``@@ID@@`` so each request can be made unique."""
    group = fixture("group-five-firing.json")
    originals = group["alerts"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    alerts = []
    for i in range(size):
        alert = copy.deepcopy(originals[i % len(originals)])
        base = alert["labels"]["container"]
        alert["labels"]["alertname"] = alertname
        alert["labels"]["container"] = f"{base}-{ID_MARK}{i:04x}"
        alert["fingerprint"] = f"{ID_MARK}{i:04x}"
        alert["startsAt"] = now
        alerts.append(alert)
    group["alerts"] = alerts
    group["groupLabels"] = {"alertname": alertname}
    group["commonLabels"] = {k: v for k, v in group["commonLabels"].items() if k != "container"}
    group["commonLabels"]["alertname"] = alertname
    group["groupKey"] = f'{{}}:{{alertname="{alertname}"}}'
    return _am_json(group)


def fixed_bodies(template: str, count: int, prefix: str) -> list[str]:
    """``count`` concrete bodies (12-hex ids from ``prefix``): replayed, they are duplicates."""
    return [template.replace(ID_MARK, f"{prefix}{n:08x}") for n in range(count)]


def single_alert(fingerprint: str, container: str, alertname: str) -> str:
    """One firing alert (single-firing.json's shape) with the given identity."""
    body = fixture("single-firing.json")
    alert = body["alerts"][0]
    alert["labels"]["alertname"] = alertname
    alert["labels"]["container"] = container
    alert["fingerprint"] = fingerprint
    alert["startsAt"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    body["commonLabels"] = dict(alert["labels"])
    body["groupLabels"] = {"alertname": alertname}
    return _am_json(body)
