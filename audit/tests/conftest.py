"""Shared fixtures of the audit tests: a small trail with known counts, and role clients."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.utils import timezone

from audit.services import audit_record


@pytest.fixture(autouse=True)
def _fresh_rate_limit_budget() -> None:
    # The rate limiter counts requests per user in the cache, which outlives a test.
    cache.clear()


@pytest.fixture
def mirror_path(settings: Any, tmp_path: Any) -> Any:
    path = tmp_path / "audit.jsonl"
    settings.AUTOHEAL_AUDIT_JSONL = str(path)
    return path


def _user_client(client: Any, django_user_model: Any, username: str, role: str | None) -> Any:
    user = django_user_model.objects.create_user(username, password="not-used-here-9")
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    client.force_login(user)
    return client


@pytest.fixture
def ops_client(client: Any, django_user_model: Any) -> Any:
    return _user_client(client, django_user_model, "operator", "ops")


@pytest.fixture
def admin_client_role(client: Any, django_user_model: Any) -> Any:
    return _user_client(client, django_user_model, "chief", "admin")


@pytest.fixture
def norole_client(client: Any, django_user_model: Any) -> Any:
    return _user_client(client, django_user_model, "visitor", None)


@pytest.fixture
def trail(mirror_path: Any) -> dict[str, Any]:
    """Eleven events over three days, oldest first (timestamps only move forward), the last 5 s ago."""
    now = timezone.now()
    disk_labels = {"alertname": "DiskFull", "container": "db-1", "severity": "critical"}
    cpu_labels = {"alertname": "HighCPU", "container": "web-1", "severity": "warning"}
    for _ in range(3):
        audit_record(
            kind="alert_received",
            alertname="DiskFull",
            target="db-1",
            message="alert DiskFull firing",
            data={"labels": disk_labels},
            ts=now - timedelta(days=3),
        )
    for _ in range(2):
        audit_record(
            kind="action_ok",
            alertname="DiskFull",
            target="db-1",
            policy="clean-disk",
            message="command ok",
            data={"duration_seconds": 1.5},
            ts=now - timedelta(days=2),
        )
    for _ in range(4):
        audit_record(
            kind="alert_received",
            alertname="HighCPU",
            target="web-1",
            message="alert HighCPU firing",
            data={"labels": cpu_labels},
            ts=now - timedelta(hours=1),
        )
    audit_record(
        kind="action_fail",
        alertname="HighCPU",
        target="web-1",
        message="Restart FAILED: timeout",
        data={"duration_seconds": 30, "error": "timeout"},
        ts=now - timedelta(minutes=10),
    )
    audit_record(
        kind="switch_changed",
        actor="alice",
        message="dry run on",
        data={"dry_run": True},
        ts=now - timedelta(seconds=5),
    )
    return {"now": now, "total": 11}
