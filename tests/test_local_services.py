"""scripts/services.sh: the Docker variables on their own, apart from the tests' database."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.docker
def test_docker_env_names_the_private_engine_and_nothing_else(docker_client: object) -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "services.sh"), "docker-env"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    # Evaluated before `make run`, it must not move the app onto the tests' database.
    assert result.stdout.splitlines() == [f"export DOCKER_HOST={os.environ['AUTOHEAL_TEST_DOCKER_HOST']}"]
    assert "DATABASE_URL" not in result.stdout
