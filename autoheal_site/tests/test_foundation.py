"""The foundation: settings fail closed in production, probes answer, real services are reachable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import started_at

ROOT = Path(__file__).resolve().parents[2]


def _settings_in_subprocess(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOHEAL_", "SECRET_KEY"))}
    full.update(env)
    full["DJANGO_SETTINGS_MODULE"] = "autoheal_site.settings"
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "SECRET_KEY (or SECRET_KEY_FILE) is not set"),
        ({"SECRET_KEY": "x" * 60, "AUTOHEAL_ALLOWED_HOSTS": "autoheal.example"}, "too short"),
        ({"SECRET_KEY": "k3y-" * 16, "AUTOHEAL_DEBUG": "1", "AUTOHEAL_ALLOWED_HOSTS": "a.example"}, "DEBUG is on"),
        ({"SECRET_KEY": "k3y-" * 16, "AUTOHEAL_ALLOWED_HOSTS": "*"}, "no wildcard"),
        ({"SECRET_KEY": "k3y-" * 16}, "AUTOHEAL_ALLOWED_HOSTS is not set: list the host names"),
    ],
)
def test_production_refuses_unsafe_settings(env: dict[str, str], expected: str) -> None:
    result = _settings_in_subprocess({"AUTOHEAL_ENV": "production", **env})
    assert result.returncode != 0
    assert expected in result.stderr
    # The secret's value never appears in the error.
    if "SECRET_KEY" in env:
        assert env["SECRET_KEY"] not in result.stderr


def test_unset_allowed_hosts_is_not_called_a_wildcard() -> None:
    result = _settings_in_subprocess({"AUTOHEAL_ENV": "production", "SECRET_KEY": "k3y-" * 16})
    assert result.returncode != 0
    assert "wildcard" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["manage.py", "migrate", "--noinput"],
        ["-c", "import autoheal_site.asgi"],  # what daphne imports
        ["-c", "import autoheal_site.wsgi"],  # what gunicorn imports
    ],
)
@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"AUTOHEAL_ALLOWED_HOSTS": "autoheal.example"}, "SECRET_KEY"),
        ({"SECRET_KEY": "k3y-" * 16, "AUTOHEAL_ALLOWED_HOSTS": "*"}, "AUTOHEAL_ALLOWED_HOSTS"),
        (
            {"SECRET_KEY": "Zq8#-9aLp" * 8, "AUTOHEAL_ALLOWED_HOSTS": "a.example", "AUTOHEAL_RATE_LIMIT": "lots"},
            "AUTOHEAL_RATE_LIMIT",
        ),
    ],
)
def test_production_misconfiguration_is_one_line_without_traceback(
    command: list[str], env: dict[str, str], variable: str
) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOHEAL_", "SECRET_KEY", "DJANGO_"))}
    full.update({"AUTOHEAL_ENV": "production", **env})
    result = subprocess.run([sys.executable, *command], cwd=ROOT, env=full, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("autoheal: ") and variable in lines[0]


def test_production_starts_with_secret_key_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("Zq8#-9aLp" * 8 + "\n")
    result = _settings_in_subprocess(
        {"AUTOHEAL_ENV": "production", "SECRET_KEY_FILE": str(secret), "AUTOHEAL_ALLOWED_HOSTS": "autoheal.example"}
    )
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


def test_check_deploy_is_clean_in_production(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOHEAL_")}
    env.update(
        {
            "AUTOHEAL_ENV": "production",
            "SECRET_KEY": "Zq8#-9aLp" * 8,
            "AUTOHEAL_ALLOWED_HOSTS": "autoheal.example",
            "AUTOHEAL_DATA_DIR": str(tmp_path),
        }
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_health_answers_the_interface_json(client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "service",
        "version",
        "enabled",
        "dry_run",
        "paused_until",
        "circuit",
        "queue_depth",
        "last_event_at",
    }
    assert body["service"] == "autoheal"
    assert body["circuit"] == "closed"
    assert body["queue_depth"] == 0


@pytest.mark.django_db
def test_readyz_answers_when_the_database_does(client) -> None:
    assert client.get("/readyz").status_code == 200


@pytest.mark.postgres
@pytest.mark.django_db
def test_suite_runs_on_postgresql_when_configured() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version_num')::int")
        (version,) = cursor.fetchone()
    assert version >= 150000


@pytest.mark.docker
def test_a_real_container_restart_changes_started_at(make_container) -> None:
    container = make_container(labels={"autoheal.enable": "true"})
    before = started_at(container)
    time.sleep(0.05)
    container.restart(timeout=5)
    assert started_at(container) != before
    assert container.attrs["State"]["Running"] is True
