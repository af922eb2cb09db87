"""deploy/backup/backup.sh and restore.sh on the embedded SQLite database, as an operator runs them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def rows(data: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(data / "autoheal.sqlite3")) as db:
        return db.execute(sql).fetchall()


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_scripts_back_up_prune_and_restore_a_sqlite_installation(tmp_path):
    data = tmp_path / "data"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "AUTOHEAL_DATA_DIR": str(data),
        "AUTOHEAL_AUDIT_JSONL": str(data / "audit.jsonl"),
        "AUTOHEAL_PROMETHEUS_URL": "",
        "BACKUP_KEEP": "1",
    }
    manage = [sys.executable, "manage.py"]
    run([*manage, "migrate", "--noinput"], env)
    run([*manage, "autoheal_policies", "import", "deploy/policies/demo.yaml"], env)
    policies = rows(data, "SELECT name, matchers, action, target FROM remediation_policy ORDER BY name")
    assert policies
    mirror = (data / "audit.jsonl").read_text()
    assert "policy_changed" in mirror

    backups = tmp_path / "backups"
    first = run(["bash", "deploy/backup/backup.sh", str(backups)], env)
    assert "database: SQLite online backup" in first.stdout
    time.sleep(1.1)  # backup directories are named to the second
    run(["bash", "deploy/backup/backup.sh", str(backups)], env)
    kept = sorted(backups.iterdir())
    assert len(kept) == 1 and (kept[0] / "manifest.json").is_file()  # BACKUP_KEEP=1 pruned the first

    for path in data.iterdir():  # the disaster: database and mirror gone
        if path.name.startswith(("autoheal.sqlite3", "audit.jsonl")):
            path.unlink()

    restored = run(["bash", "deploy/backup/restore.sh", str(kept[0])], env)
    assert "row counts match the backup" in restored.stdout
    assert "audit trail intact" in restored.stdout
    assert rows(data, "SELECT name, matchers, action, target FROM remediation_policy ORDER BY name") == policies
    assert (data / "audit.jsonl").read_text() == mirror
