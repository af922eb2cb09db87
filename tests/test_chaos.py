"""The fault campaign's CI form: 60 seconds of mixed load through seven faults, every invariant held.

Runs ``python -m bench.chaos --seconds 60`` as its own process: it starts (and stops, by pid) its
own PostgreSQL cluster, redis-server, dockerd, web processes, workers and watcher, so nothing it
restarts or kills is shared with other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_the_fault_campaign_loses_nothing_and_runs_no_job_twice(tmp_path: Path) -> None:
    result_file = tmp_path / "chaos.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--seconds", "60", "--json", str(result_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    summary = json.loads(result_file.read_text())
    assert [f["name"] for f in summary["faults"]] == [
        "PostgreSQL restart (fast shutdown)",
        "PostgreSQL restart (immediate shutdown)",
        "Redis killed and restarted",
        "dockerd restarted",
        "worker SIGKILLed mid-action",
        "web process SIGKILLed",
        "JSONL mirror filesystem full, then freed",
    ]
    assert all(f["ingest_recovered_s"] is not None and f["end_to_end_s"] is not None for f in summary["faults"])
    assert "SIGKILLed" in " ".join(summary["faults"][4]["notes"])  # a worker really died mid-action
    assert summary["checks"] and all(check["ok"] for check in summary["checks"]), summary["checks"]
    assert summary["deliveries"] > 100
    for fault in summary["faults"]:  # deliveries sent during each fault were all stored once
        counts = summary["per_phase"][fault["name"]]
        assert counts["accepted"] > 0 and counts["stored_once"] == counts["accepted"], (fault["name"], counts)
