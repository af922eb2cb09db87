"""What one delivery costs in statements, the policy cache behind it, and the workers' wake-up.

A delivery is a handful of statements whatever its size: one upsert for all its incidents (which
also reads the policies' version), one statement that inserts its jobs and its audit events, then
the commit; the workers' NOTIFY is sent after the commit, off the request's connection. Each statement's text is the same whatever the number
of rows (the rows are one JSON parameter), so it is prepared once per connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from audit.models import AuditPending
from remediation import wakeup
from remediation.intake import alert_ingest
from remediation.models import Alert, Job, Policy

pytestmark = pytest.mark.django_db

MATCHERS = ['alertname=~"ContainerOOMKilled|AutohealTestFlag"']


@pytest.fixture
def sealer(settings: Any) -> None:
    """The production mode on PostgreSQL: audit events are stored as pending, the sealer chains them."""
    settings.AUTOHEAL_AUDIT_CHAIN = "sealer"
    settings.AUTOHEAL_WAKEUP = "postgres"


def fresh(payload: dict[str, Any], copies: int = 1) -> dict[str, Any]:
    """The payload's alerts, ``copies`` times over, each as a never-seen incident."""
    alerts = []
    for _ in range(copies):
        for alert in payload["alerts"]:
            alerts.append({**alert, "fingerprint": uuid.uuid4().hex[:16]})
    return {**payload, "alerts": alerts}


def statements(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]


def test_a_new_delivery_is_three_statements_whatever_its_size(
    sealer: None, fixture_json: Callable[[str], dict[str, Any]], django_assert_num_queries: Any
) -> None:
    Policy.objects.create(name="restart-oom", matchers=MATCHERS, action="restart_container")
    alert_ingest(payload=fresh(fixture_json("single-firing.json")))  # reads the policies once
    texts: set[str] = set()
    for payload, jobs in (
        (fresh(fixture_json("single-firing.json")), 1),
        (fresh(fixture_json("group-five-firing.json")), 5),
        (fresh(fixture_json("group-five-firing.json"), copies=40), 200),
    ):
        # The test runs inside a transaction, so the service's own one shows as a savepoint pair.
        # A Docker action whose policy names no host also reads the fleet agents' inventories once
        # per delivery (fleet.placement.Placer), whatever the number of alerts.
        with django_assert_num_queries(5) as captured:
            result = alert_ingest(payload=payload)
        assert result.jobs == jobs
        upsert, inventories, jobs_and_events = statements(captured)
        texts.add(upsert)
        texts.add(jobs_and_events)
        assert inventories.startswith("SELECT") and '"fleet_agent"' in inventories
        assert upsert.startswith('WITH stored AS (INSERT INTO "remediation_alert"')
        assert "ON CONFLICT" in upsert and "json_to_recordset" in upsert
        assert jobs_and_events.startswith('WITH j AS (INSERT INTO "remediation_job"')
        assert "pg_notify" not in jobs_and_events  # sent after the commit, never under its lock
        assert f'INSERT INTO "{AuditPending._meta.db_table}"' in jobs_and_events
    # One text per statement whatever the delivery's size: prepared once, reused.
    assert len(texts) == 2
    assert Alert.objects.count() == 1 + 1 + 5 + 200
    assert Job.objects.count() == 1 + 1 + 5 + 200
    # Every job is named by its action_queued event, as before.
    queued = AuditPending.objects.filter(kind="action_queued")
    assert sorted(event.data["job"] for event in queued) == sorted(Job.objects.values_list("id", flat=True))


def test_a_repeat_that_is_not_audited_is_one_statement(
    sealer: None, fixture_json: Callable[[str], dict[str, Any]], django_assert_num_queries: Any
) -> None:
    payload = fresh(fixture_json("group-five-firing.json"))
    for _ in range(3):  # the first delivery, then repeats 1 and 2, both audited
        alert_ingest(payload=payload)
    with django_assert_num_queries(3):  # savepoint, upsert, release
        result = alert_ingest(payload=payload)
    assert result.as_dict() == {"accepted": 0, "duplicates": 5, "jobs": 0}
    assert set(Alert.objects.values_list("deliveries", flat=True)) == {4}


def test_a_policy_changed_by_any_writer_routes_the_next_delivery(
    sealer: None, fixture_json: Callable[[str], dict[str, Any]]
) -> None:
    """The per-process rules cache follows the database, whoever changed the policy and how."""
    policy = Policy.objects.create(name="flagged", matchers=MATCHERS, action="log_only", target="")

    def jobs_of_next_delivery() -> list[tuple[str, bool]]:
        before = set(Job.objects.values_list("id", flat=True))
        alert_ingest(payload=fresh(fixture_json("single-firing.json")))
        return list(Job.objects.exclude(id__in=before).values_list("policy_name", "dry_run"))

    assert jobs_of_next_delivery() == [("flagged", False)]
    assert jobs_of_next_delivery() == [("flagged", False)]  # from the cache
    # A write that bypasses the services (as SQL from another process would) is seen too.
    Policy.objects.filter(pk=policy.pk).update(dry_run=True)
    assert jobs_of_next_delivery() == [("flagged", True)]
    Policy.objects.filter(pk=policy.pk).update(enabled=False)
    assert jobs_of_next_delivery() == []
    assert AuditPending.objects.filter(kind="no_policy").count() == 1
    Policy.objects.create(name="second", matchers=MATCHERS, action="log_only", target="")
    assert jobs_of_next_delivery() == [("second", False)]
    Policy.objects.filter(name="second").delete()
    assert jobs_of_next_delivery() == []


@pytest.mark.django_db(transaction=True)
def test_workers_are_woken_when_the_jobs_commit_and_never_for_a_rollback(
    sealer: None, fixture_json: Callable[[str], dict[str, Any]]
) -> None:
    Policy.objects.create(name="flagged", matchers=MATCHERS, action="log_only", target="")
    db = connection.settings_dict
    conninfo = psycopg.conninfo.make_conninfo(
        dbname=db["NAME"], user=db.get("USER") or None, host=db.get("HOST") or None, port=str(db.get("PORT") or "")
    )
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute(f"LISTEN {wakeup.CHANNEL}")
        with pytest.raises(RuntimeError), transaction.atomic():
            alert_ingest(payload=fresh(fixture_json("single-firing.json")))
            raise RuntimeError("the caller's transaction fails after the ingest")
        assert list(listener.notifies(timeout=0.5, stop_after=1)) == []
        assert Job.objects.count() == 0

        alert_ingest(payload=fresh(fixture_json("group-five-firing.json")))
        heard = list(listener.notifies(timeout=10, stop_after=1))
        assert [n.channel for n in heard] == [wakeup.CHANNEL]
        assert Job.objects.count() == 5
        # Five jobs, one notification.
        assert list(listener.notifies(timeout=0.5, stop_after=1)) == []

        # Deliveries that commit while a notification is being sent share the next one.
        for _ in range(20):
            alert_ingest(payload=fresh(fixture_json("single-firing.json")))
        heard = list(listener.notifies(timeout=2, stop_after=20))
        assert 1 <= len(heard) <= 20
        assert Job.objects.count() == 25
