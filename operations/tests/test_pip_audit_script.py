"""scripts/pip_audit.sh tells "vulnerable" from "could not check" from "clean", never passing silently.

pip-audit itself is replaced by a stand-in that writes a fixed report: the vulnerability databases
are not reachable from this machine, and the script's job is to read pip-audit's report right.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pip_audit.sh"


def run_with_report(tmp_path: Path, report: dict | None, **env: str) -> subprocess.CompletedProcess[str]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    fake = venv / "bin" / "pip-audit"
    if report is None:
        body = "echo 'ConnectionError: cannot reach the vulnerability service' >&2\nexit 1\n"
    else:
        (tmp_path / "report.json").write_text(json.dumps(report))
        body = (
            'while [ $# -gt 0 ]; do [ "$1" = --output ] && out=$2; shift; done\n'
            f'cp {tmp_path / "report.json"} "$out"\nexit 0\n'
        )
    fake.write_text("#!/usr/bin/env bash\n" + body)
    fake.chmod(0o755)
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "VENV": str(venv), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_known_vulnerability_fails_and_names_the_fix(tmp_path):
    report = {
        "dependencies": [
            {"name": "django", "version": "5.2.0", "vulns": [{"id": "PYSEC-1", "fix_versions": ["5.2.1"]}]},
            {"name": "redis", "version": "6.4.0", "vulns": []},
        ]
    }
    result = run_with_report(tmp_path, report)
    assert result.returncode == 1
    assert "VULNERABLE django 5.2.0: PYSEC-1 (fixed in: 5.2.1)" in result.stdout


def test_no_answer_from_the_database_is_a_loud_could_not_check(tmp_path):
    report = {"dependencies": [{"name": "django", "skip_reason": "Dependency not found on PyPI"}]}
    result = run_with_report(tmp_path, report)
    assert result.returncode == 3
    assert "COULD NOT CHECK" in result.stdout
    offline = run_with_report(tmp_path / "offline", None)
    assert offline.returncode == 3
    assert "COULD NOT CHECK" in offline.stdout and "cannot reach the vulnerability service" in offline.stdout


def test_a_clean_report_passes_and_lists_what_was_not_checked(tmp_path):
    report = {
        "dependencies": [
            {"name": "django", "version": "5.2.19", "vulns": []},
            {"name": "localthing", "skip_reason": "Dependency not found on PyPI"},
        ]
    }
    result = run_with_report(tmp_path, report)
    assert result.returncode == 0
    assert "1 dependencies checked, no known vulnerabilities; 1 not checked" in result.stdout
    assert "not checked: Dependency not found on PyPI" in result.stdout
