"""deploy/logrotate/audit.conf with the real logrotate: rotating while Autoheal writes loses no line."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import threading
from pathlib import Path

from audit import mirror
from audit.models import AuditEvent
from conftest import service_missing

CONF = Path(__file__).resolve().parents[2] / "deploy" / "logrotate" / "audit.conf"
SHIPPED_PATH = "/var/lib/autoheal/audit/audit.jsonl"


def read_ids(path: Path) -> list[int]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["id"] for line in handle]


def test_the_shipped_config_names_the_mirror_path_of_the_compose_files():
    text = CONF.read_text(encoding="utf-8")
    assert f"{SHIPPED_PATH} {{" in text
    compose = (CONF.parents[1] / "docker-compose.yml").read_text(encoding="utf-8")
    assert f"AUTOHEAL_AUDIT_JSONL: {SHIPPED_PATH}" in compose
    for directive in ("daily", "rotate 14", "compress", "delaycompress", "nocreate"):
        assert f"\n    {directive}\n" in text, directive


def test_rotating_while_events_are_appended_loses_no_line_and_compresses_old_files(settings, tmp_path):
    if not shutil.which("logrotate"):
        service_missing("logrotate not installed")
    live = tmp_path / "audit" / "audit.jsonl"
    settings.AUTOHEAL_AUDIT_JSONL = str(live)
    conf = tmp_path / "audit.conf"
    conf.write_text(CONF.read_text(encoding="utf-8").replace(SHIPPED_PATH, str(live)), encoding="utf-8")
    total = 20000
    written = threading.Event()

    def write() -> None:
        for i in range(total):
            mirror.append(AuditEvent(id=i, kind="alert_received", alertname="ContainerUnhealthy", message=f"n{i}"))
        written.set()

    writer = threading.Thread(target=write)
    mirror.append(AuditEvent(id=-1, kind="ack", message="before the first rotation"))
    writer.start()
    rotations = 0
    # At most 10 rotations: with "rotate 14" no file is dropped, so every line must still be there.
    while rotations < 10:
        # -f forces the daily rotation now; a state file of our own keeps the system's untouched.
        result = subprocess.run(
            ["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        rotations += 1
        if written.is_set() and rotations >= 2:
            break
    writer.join(timeout=120)
    assert written.is_set()

    files = sorted(live.parent.iterdir())
    ids = [i for path in files if path.name.startswith("audit.jsonl") for i in read_ids(path)]
    assert sorted(ids) == [-1, *range(total)]  # every line once: none lost, none doubled
    names = {path.name for path in files}
    assert "audit.jsonl.1" in names  # the newest rotated file waits a cycle before compression
    assert "audit.jsonl.2.gz" in names
