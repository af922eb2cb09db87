"""Concurrent and HA re-deliveries against PostgreSQL: one incident, one job, however they race."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from audit.models import AuditEvent
from remediation.models import Alert, Job, Policy

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TOKEN = "concurrency-token"


def deliver_concurrently(bodies: list[bytes]) -> list[Any]:
    """POST every body from its own thread (own database connection), all released at once."""
    barrier = threading.Barrier(len(bodies))
    answers: list[Any] = [None] * len(bodies)

    def send(index: int, body: bytes) -> None:
        try:
            barrier.wait(timeout=30)
            answers[index] = Client().post(
                "/alert", data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i, body)) for i, body in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return answers


def test_twenty_concurrent_redeliveries_make_one_incident_and_one_job(
    settings: Any, fixture_body: Callable[[str], bytes]
) -> None:
    settings.AUTOHEAL_WEBHOOK_TOKENS = [TOKEN]
    Policy.objects.create(name="restart-flagged", matchers=['alertname="AutohealTestFlag"'], action="restart_container")
    answers = deliver_concurrently([fixture_body("single-firing.json")] * 20)

    assert [a.status_code for a in answers] == [202] * 20
    assert sum(a.json()["accepted"] for a in answers) == 1
    assert sum(a.json()["duplicates"] for a in answers) == 19
    assert sum(a.json()["jobs"] for a in answers) == 1
    assert Alert.objects.count() == 1
    assert Alert.objects.get().deliveries == 20
    assert Job.objects.count() == 1
    assert AuditEvent.objects.filter(kind="alert_received").count() == 1
    assert AuditEvent.objects.filter(kind="action_queued").count() == 1
    # Repeats 1, 2, 4, 8 and 16 are on record; the counter has all of them.
    assert AuditEvent.objects.filter(kind="alert_duplicate").count() == 5


def test_racing_firing_and_partly_resolved_groups_never_double_an_incident(
    settings: Any, fixture_body: Callable[[str], bytes]
) -> None:
    """An HA pair delivering overlapping groups in any order: no deadlock, no second incident or job."""
    settings.AUTOHEAL_WEBHOOK_TOKENS = [TOKEN]
    Policy.objects.create(name="restart-oom", matchers=['alertname="ContainerOOMKilled"'], action="restart_container")
    bodies = [fixture_body("group-five-firing.json"), fixture_body("group-five-mixed.json")] * 6
    answers = deliver_concurrently(bodies)

    assert [a.status_code for a in answers] == [202] * len(bodies)
    assert Alert.objects.count() == 5
    assert sum(a.deliveries for a in Alert.objects.all()) == 5 * len(bodies)
    jobs = list(Job.objects.values_list("target", flat=True))
    assert len(jobs) == len(set(jobs))
    assert {"nginx", "redis", "sidecar"} <= set(jobs)
    # However the race went, the two alerts resolved in the later delivery end up resolved.
    resolved = Alert.objects.filter(status="resolved").values_list("labels__container", flat=True)
    assert sorted(resolved) == ["api", "worker"]
    assert AuditEvent.objects.filter(kind="alert_received").count() == 5
