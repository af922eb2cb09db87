"""scripts/provision.sh: installs what is missing, says the one command when it cannot, and does
nothing on a machine that has everything.

apt-get itself is not run here (it would change this machine): a stand-in ``dpkg-query`` reports
packages missing, and a stand-in ``sudo`` records what it was asked to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "provision.sh"


def _bin(tmp_path: Path, *, sudo: bool) -> dict[str, str]:
    """A PATH with only what the script needs, as a user who is not root, with nothing installed."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("bash", "dirname", "grep", "env", "cat", "sha256sum", "cut"):
        real = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        (fake / tool).symlink_to(real)
    (fake / "python3").symlink_to(sys.executable)
    scripts = {"id": "echo 1000", "dpkg-query": "exit 1", "apt-get": 'echo "apt-get $*" >> "$LOG"; exit 0'}
    if sudo:
        scripts["sudo"] = 'echo "sudo $*" >> "$LOG"; exit 0'
    for name, body in scripts.items():
        (fake / name).write_text(f"#!{fake / 'bash'}\n{body}\n")
        (fake / name).chmod(0o755)
    return {"PATH": str(fake), "LOG": str(tmp_path / "log"), "HOME": str(tmp_path)}


def test_without_root_or_sudo_it_names_the_one_command_and_stops(tmp_path: Path) -> None:
    env = _bin(tmp_path, sudo=False)
    result = subprocess.run(
        [env["PATH"] + "/bash", str(SCRIPT), "bench"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "provision: missing Debian packages; as root run: "
        "apt-get update && apt-get install -y --no-install-recommends wrk"
    ]
    assert not (tmp_path / "log").exists()  # nothing was run


def test_with_sudo_it_installs_only_the_missing_packages(tmp_path: Path) -> None:
    env = _bin(tmp_path, sudo=True)
    result = subprocess.run(
        [env["PATH"] + "/bash", str(SCRIPT), "bench"],
        env={**env, "VENV": str(ROOT / ".venv")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    ran = (tmp_path / "log").read_text().splitlines()
    assert ran[0].startswith("sudo env DEBIAN_FRONTEND=noninteractive apt-get update"), ran
    assert ran[1].endswith("apt-get install -y -q --no-install-recommends wrk"), ran
    assert "installing wrk" in result.stderr


def test_a_provisioned_machine_installs_nothing() -> None:
    # This machine ran `scripts/provision.sh test` before the suite (make test, .ci/run).
    env = {k: v for k, v in os.environ.items() if k != "VENV"}
    result = subprocess.run([str(SCRIPT), "test"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""
