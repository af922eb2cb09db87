"""Shared helpers of the execution tests: rows as intake creates them, and reading the audit trail."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from remediation.models import Alert, Job, Policy
from remediation.worker import Worker

ROOT = Path(__file__).resolve().parents[2]


TEST_PROGRAMS = ("sh", "touch", "true", "false", "echo", "env", "sleep")


def allowed_test_programs() -> list[str]:
    """The standard programs the tests' command policies run, as an operator would allow them."""
    return [path for name in TEST_PROGRAMS if (path := shutil.which(name))]


def make_policy(**fields: Any) -> Policy:
    values: dict[str, Any] = {
        "name": f"p-{uuid.uuid4().hex[:8]}",
        "matchers": ['alertname="ContainerUnhealthy"'],
        "action": "log_only",
        "target": "{{ labels.container }}",
        "cooldown_seconds": 0,
        "max_actions_per_hour": 3,
        "verify_within_seconds": 300,
    }
    values.update(fields)
    return Policy.objects.create(**values)


def make_alert(**fields: Any) -> Alert:
    labels = fields.pop("labels", {"alertname": "ContainerUnhealthy", "container": "web", "severity": "critical"})
    values: dict[str, Any] = {
        "fingerprint": uuid.uuid4().hex[:16],
        "starts_at": timezone.now() - timedelta(seconds=30),
        "alertname": labels.get("alertname", ""),
        "labels": labels,
    }
    values.update(fields)
    return Alert.objects.create(**values)


def make_job(*, policy: Policy, alert: Alert, **fields: Any) -> Job:
    """A queued job as intake creates it: a snapshot of the policy and the rendered target."""
    values: dict[str, Any] = {
        "policy": policy,
        "policy_name": policy.name,
        "alert": alert,
        "action": policy.action,
        "target": alert.labels.get("container", ""),
        "params": policy.params,
        "dry_run": policy.dry_run,
    }
    values.update(fields)
    return Job.objects.create(**values)


def kinds(**filters: Any) -> list[str]:
    """Audit kinds in the order they were written."""
    return list(AuditEvent.objects.filter(**filters).order_by("id").values_list("kind", flat=True))


def events(kind: str, **filters: Any) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(kind=kind, **filters).order_by("id"))


def drain(worker: Worker | None = None, *, max_ticks: int = 50) -> Worker:
    """Tick a worker in this process until it has nothing left to do."""
    worker = worker or Worker(name="test-worker")
    for _ in range(max_ticks):
        if not worker.tick():
            break
    return worker


def drain_concurrently(workers: int, *, max_ticks: int) -> None:
    """``workers`` workers, each in its own thread with its own connection, draining one queue."""

    def work(name: str) -> None:
        try:
            drain(Worker(name=name), max_ticks=max_ticks)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def wait_until(predicate: Callable[[], Any], *, timeout: float = 30.0, step: float = 0.1) -> Any:
    """Poll until the predicate is truthy; fail with a clear message after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s: {getattr(predicate, '__name__', predicate)}")


def database_url() -> str:
    """The URL of the database this test runs against (pytest-django's test_<name>)."""
    s = connection.settings_dict
    user = s.get("USER") or "postgres"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{s['NAME']}"


def spawn_manage(
    args: list[str], *, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``manage.py ARGS`` against the test database as a separate OS process."""
    full_env = dict(os.environ)
    full_env.update({"DATABASE_URL": database_url(), "AUTOHEAL_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    if os.environ.get("AUTOHEAL_TEST_DOCKER_HOST"):
        full_env["DOCKER_HOST"] = os.environ["AUTOHEAL_TEST_DOCKER_HOST"]
    full_env.update(env or {})
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
    )


def stop_process(process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Stop a process this test started, by its PID; kill it if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
