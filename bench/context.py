"""What every scenario gets: options, the processes' environment, where logs go, the result rows."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import BENCH_TOKEN
from bench.report import Row


@dataclass
class Context:
    quick: bool
    env: dict[str, str]
    logdir: Path
    server: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Length of one load run."""
        return 3.0 if self.quick else 10.0

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print("  " + _short(row), flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)


def _short(row: Row) -> str:
    base = f" vs {row.baseline} {row.baseline_value:.4g}" if row.baseline and row.baseline_value else ""
    ratio = f" ratio {row.ratio:.2f}" if row.ratio is not None else ""
    value = "-" if row.value is None else f"{row.value:.4g}"
    return f"{row.scenario}: {row.figure} = {value} {row.unit}{base}{ratio}"


WEBHOOK_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "Alertmanager/0.25.0",
    "Authorization": f"Bearer {BENCH_TOKEN}",
}

# The baseline gets the same body and headers minus the webhook token (it authenticates nobody).
NOOP_HEADERS = {k: v for k, v in WEBHOOK_HEADERS.items() if k != "Authorization"}


def post(port: int, path: str, body: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One POST on loopback; returns (status, parsed JSON or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body.encode(), headers=headers or WEBHOOK_HEADERS)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()
