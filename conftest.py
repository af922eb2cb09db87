"""Test harness: real services when the machine has them.

A test marked ``docker``, ``redis``, ``postgres``, ``prometheus``, ``alertmanager``, ``oidc`` or
``browser`` skips with a clear reason when its service is missing, unless
``AUTOHEAL_REQUIRE_SERVICES=1`` (CI), which turns each such skip into a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parent / "tests" / "fixtures" / "alertmanager"
REQUIRE_SERVICES = os.environ.get("AUTOHEAL_REQUIRE_SERVICES", "") in ("1", "true", "yes")
ARTIFACTS = Path(__file__).resolve().parent / "test-artifacts"

# Most tests run inside one transaction that never commits, where a sealer could never see their
# audit events: they chain inline, and so do the servers and workers they start (inherited
# environment). The sealer's own tests (audit/tests/test_sealer.py) switch to it explicitly.
os.environ.setdefault("AUTOHEAL_AUDIT_CHAIN", "inline")


def _hypothesis_profile() -> None:
    """Property tests judge answers, never speed: on a loaded machine (CI shares its cores with
    real services) a slow example or a slow data generation is not a failure."""
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "autoheal", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )
    settings.load_profile("autoheal")


_hypothesis_profile()


def service_missing(reason: str) -> None:
    """Skip locally, fail in CI: a test that needs a missing service must never pass silently."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


def _binary_present(*names: str) -> str | None:
    missing = [n for n in names if shutil.which(n) is None]
    return f"{', '.join(missing)} not installed" if missing else None


@pytest.fixture(autouse=True)
def _require_marked_services(request: pytest.FixtureRequest) -> None:
    marks = {m.name for m in request.node.iter_markers()}
    if "postgres" in marks:
        from django.db import connection

        if connection.vendor != "postgresql":
            service_missing("PostgreSQL: set DATABASE_URL=postgres://... (scripts/services.sh env)")
    if "redis" in marks and not os.environ.get("AUTOHEAL_TEST_REDIS_URL"):
        service_missing("Redis: set AUTOHEAL_TEST_REDIS_URL (scripts/services.sh up)")
    if "docker" in marks and not os.environ.get("AUTOHEAL_TEST_DOCKER_HOST"):
        service_missing("Docker: run scripts/services.sh up and set AUTOHEAL_TEST_DOCKER_HOST")
    if "prometheus" in marks and (why := _binary_present("prometheus", "promtool")):
        service_missing(f"Prometheus: {why}")
    if "alertmanager" in marks and (why := _binary_present("prometheus-alertmanager", "amtool")):
        service_missing(f"Alertmanager: {why}")
    if "browser" in marks and (why := _binary_present("chromium")):
        service_missing(f"browser: {why}")


@pytest.fixture(autouse=True)
def _audit_chain_mode(settings: Any) -> None:
    settings.AUTOHEAL_AUDIT_CHAIN = os.environ["AUTOHEAL_AUDIT_CHAIN"]


@pytest.fixture(autouse=True)
def _webhook_counts_stored_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The background flusher writes on its own connection, outside a test's transaction, so its
    # rows would outlive the test; tests store each count at once unless they test the flusher.
    from observability import services

    monkeypatch.setattr(services, "WEBHOOK_FLUSH_SECONDS", 0)


@pytest.fixture(autouse=True)
def _no_wakeup_connection_outlives_a_test() -> Iterator[None]:
    # The job wake-up sender keeps a connection of its own to the test database.
    yield
    from remediation import wakeup

    wakeup.stop_sending()


@pytest.fixture(autouse=True)
def _fresh_local_cache() -> None:
    """Each test starts with an empty in-process cache, so the per-client rate-limit counters of
    earlier tests (every test client is 127.0.0.1) never turn a later test's answer into a 429."""
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    if isinstance(caches["default"], LocMemCache):
        caches["default"].clear()


@pytest.fixture
def fixture_body() -> Callable[[str], bytes]:
    """The exact bytes of a captured Alertmanager delivery from tests/fixtures/alertmanager."""

    def load(name: str) -> bytes:
        path = FIXTURES / name
        if not path.exists():
            pytest.fail(f"fixture {name} not found in {FIXTURES}")
        return path.read_bytes()

    return load


@pytest.fixture
def fixture_json(fixture_body: Callable[[str], bytes]) -> Callable[[str], dict[str, Any]]:
    def load(name: str) -> dict[str, Any]:
        return json.loads(fixture_body(name))

    return load


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests keep screenshots and other artifacts (test-artifacts/, kept by CI)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# --- Docker ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_host() -> str:
    host = os.environ.get("AUTOHEAL_TEST_DOCKER_HOST")
    if not host:
        service_missing("Docker: run scripts/services.sh up and set AUTOHEAL_TEST_DOCKER_HOST")
    return host  # type: ignore[return-value]


@pytest.fixture(scope="session")
def docker_client(docker_host: str) -> Iterator[Any]:
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        client.ping()
    except Exception as exc:
        service_missing(f"Docker at {docker_host} does not answer: {exc}")
    yield client
    client.close()


@pytest.fixture
def docker_settings(settings: Any, docker_host: str) -> Any:
    """Point Autoheal's Docker executor at the test engine."""
    settings.DOCKER_HOST = docker_host
    return settings


@pytest.fixture
def make_container(docker_client: Any) -> Iterator[Callable[..., Any]]:
    """Start throwaway busybox containers; all are removed after the test.

    ``make_container(labels={"autoheal.enable": "true"}, healthy=True)`` gives a running container
    with ``--init`` (fast restarts) and a health check on /tmp/healthy.
    """
    created: list[Any] = []
    image = os.environ.get("AUTOHEAL_TEST_IMAGE", "autoheal-test-busybox:latest")

    def make(
        *,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        healthy: bool | None = True,
        command: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        name = name or f"ah-test-{uuid.uuid4().hex[:10]}"
        options: dict[str, Any] = {
            "name": name,
            "labels": labels or {},
            "detach": True,
            "init": True,
            "network_mode": "none",
        }
        if healthy is not None:
            start = "touch /tmp/healthy && " if healthy else ""
            command = command or ["sh", "-c", f"{start}exec sleep 100000"]
            options["healthcheck"] = {
                "test": ["CMD-SHELL", "test -f /tmp/healthy"],
                "interval": 1_000_000_000,
                "timeout": 1_000_000_000,
                "retries": 1,
                "start_period": 0,
            }
        options.update(kwargs)
        container = docker_client.containers.run(image, command or ["sleep", "100000"], **options)
        created.append(container)
        return container

    yield make
    for container in created:
        with contextlib.suppress(Exception):  # already gone
            container.remove(force=True)


# Debian's Chromium, headless, with every feature that would reach for the network turned off
# (the machine has no route out and Chromium retries such connections many at a time).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]


def launch_chromium(playwright: Any) -> Any:
    """Launch the system Chromium through Playwright (never a downloaded browser)."""
    return playwright.chromium.launch(executable_path=shutil.which("chromium") or "chromium", args=CHROMIUM_ARGS)


def started_at(container: Any) -> str:
    """A container's State.StartedAt: the proof that a restart happened."""
    container.reload()
    return str(container.attrs["State"]["StartedAt"])
