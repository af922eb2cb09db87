"""/metrics as Prometheus sees it: counters from audit events, state gauges from the database."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from audit import metrics
from audit.services import audit_record, audit_record_many
from observability import services
from observability.collector import AutohealCollector
from observability.models import MetricSeries
from observability.series import labels_key
from observability.services import webhook_request_count
from observability.tests.helpers import scrape, value
from remediation.models import Alert, Job, Policy, Switch

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.postgres


def _alert(alertname: str = "ContainerUnhealthy", fingerprint: str = "f1") -> Alert:
    return Alert.objects.create(fingerprint=fingerprint, starts_at=timezone.now(), alertname=alertname)


def _policy(name: str = "restart", cooldown: int = 300) -> Policy:
    return Policy.objects.create(name=name, action="restart_container", matchers=[], cooldown_seconds=cooldown)


@pytest.mark.django_db
def test_action_outcomes_are_counted_by_alertname_and_result(client: Any) -> None:
    audit_record(kind="action_ok", alertname="ContainerUnhealthy", data={"duration_seconds": 0.4})
    audit_record(kind="action_ok", alertname="ContainerUnhealthy", data={"duration_seconds": 1.5})
    audit_record(kind="action_fail", alertname="ContainerUnhealthy", data={"duration_seconds": 12.0, "error": "x"})
    audit_record(kind="action_dry_run", alertname="DiskFull")
    audit_record(kind="action_skipped", alertname="DiskFull", data={"reason": "cooldown"})
    audit_record(kind="action_started", alertname="DiskFull")

    samples = scrape(client)

    assert value(samples, "autoheal_actions_total", alertname="ContainerUnhealthy", result="ok") == 2
    assert value(samples, "autoheal_actions_total", alertname="ContainerUnhealthy", result="fail") == 1
    assert value(samples, "autoheal_actions_total", alertname="DiskFull", result="dry_run") == 1
    assert value(samples, "autoheal_actions_total", alertname="DiskFull", result="skipped") == 1
    assert value(samples, "autoheal_action_failures_total", alertname="ContainerUnhealthy") == 1
    assert value(samples, "autoheal_action_failures_total", alertname="DiskFull") is None
    assert value(samples, "autoheal_event_total", kind="action_ok") == 2
    assert value(samples, "autoheal_event_total", kind="action_started") == 1
    assert value(samples, "autoheal_event_total", kind="circuit_open") == 0
    # Durations land in the right buckets: 0.4 <= 0.5, 1.5 <= 2.5, 12 <= 30.
    assert value(samples, "autoheal_action_duration_seconds_bucket", le="0.5") == 1
    assert value(samples, "autoheal_action_duration_seconds_bucket", le="2.5") == 2
    assert value(samples, "autoheal_action_duration_seconds_bucket", le="10.0") == 2
    assert value(samples, "autoheal_action_duration_seconds_bucket", le="30.0") == 3
    assert value(samples, "autoheal_action_duration_seconds_count") == 3
    assert value(samples, "autoheal_action_duration_seconds_sum") == pytest.approx(13.9)
    # Six writes, six observations of the write latency.
    assert value(samples, "autoheal_audit_write_seconds_count") == 6


@pytest.mark.django_db
def test_last_timestamps_follow_the_newest_event_not_the_last_written(client: Any) -> None:
    newer = timezone.now()
    older = newer - timedelta(hours=1)
    audit_record(kind="action_ok", alertname="A", ts=newer)
    audit_record(kind="action_fail", alertname="A", ts=older)
    audit_record(kind="alert_received", alertname="B", ts=older)

    samples = scrape(client)

    assert value(samples, "autoheal_last_event_timestamp") == pytest.approx(newer.timestamp())
    assert value(samples, "autoheal_action_last_timestamp", alertname="A") == pytest.approx(newer.timestamp())
    # Receiving an alert is not an action.
    assert value(samples, "autoheal_action_last_timestamp", alertname="B") is None


@pytest.mark.django_db
def test_verification_escalation_and_false_positive_events_are_counted(client: Any) -> None:
    audit_record(kind="action_verified", alertname="A", data={"time_to_remediate_seconds": 42})
    audit_record(kind="action_ineffective", alertname="A", data={"escalated": False})
    audit_record(kind="action_ineffective", alertname="A", data={"escalated": True})
    audit_record(kind="incident_escalated", alertname="B")
    audit_record(kind="false_positive_marked", alertname="A", data={"false_positive": True})
    audit_record(kind="false_positive_marked", alertname="A", data={"false_positive": False})

    samples = scrape(client)

    assert value(samples, "autoheal_verifications_total", alertname="A", result="verified") == 1
    assert value(samples, "autoheal_verifications_total", alertname="A", result="ineffective") == 2
    assert value(samples, "autoheal_escalations_total", alertname="A") == 1
    assert value(samples, "autoheal_escalations_total", alertname="B") == 1
    assert value(samples, "autoheal_time_to_remediate_seconds_bucket", le="30.0") == 0
    assert value(samples, "autoheal_time_to_remediate_seconds_bucket", le="60.0") == 1
    assert value(samples, "autoheal_false_positive_marks_total", alertname="A", verdict="false_positive") == 1
    assert value(samples, "autoheal_false_positive_marks_total", alertname="A", verdict="needed") == 1


@pytest.mark.django_db
def test_events_rolled_back_leave_the_counters_untouched(client: Any) -> None:
    audit_record(kind="action_ok", alertname="A")
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(kind="action_ok", alertname="A")
        raise RuntimeError("the action's transaction fails")

    samples = scrape(client)

    assert value(samples, "autoheal_actions_total", alertname="A", result="ok") == 1
    assert value(samples, "autoheal_event_total", kind="action_ok") == 1


@pytest.mark.django_db
def test_one_audit_batch_costs_one_metrics_statement(django_assert_num_queries: Any) -> None:
    events = audit_record_many(
        [
            {"kind": kind, "alertname": f"A{i % 3}", "data": {"duration_seconds": i / 10}}
            for i, kind in enumerate(["action_ok", "action_fail", "alert_received"] * 20)
        ]
    )
    with transaction.atomic(), django_assert_num_queries(1):
        metrics.observe_audit_write(events, 0.01)


@pytest.mark.django_db
def test_a_scrape_reads_a_fixed_number_of_queries(client: Any, django_assert_num_queries: Any) -> None:
    policy = _policy()
    for i in range(20):
        alert = _alert(fingerprint=f"f{i}", alertname=f"A{i}")
        Job.objects.create(
            policy=policy,
            policy_name=policy.name,
            alert=alert,
            action=policy.action,
            state=Job.State.OK,
            started_at=timezone.now(),
            finished_at=timezone.now(),
        )
        audit_record(kind="action_ok", alertname=f"A{i}")
    # stored series, switch, queue, longest cooldown, recent jobs, false-positive ratio
    with django_assert_num_queries(7):  # 6, and one for the fleet's agent gauges
        samples = scrape(client)
    assert len([k for k in samples if k[0] == "autoheal_cooldown_remaining_seconds"]) == 20


@pytest.mark.django_db
def test_state_gauges_show_switch_queue_and_circuit(client: Any, settings: Any) -> None:
    Switch.objects.all().delete()  # start from a database that never had a switch row
    samples = scrape(client)
    assert value(samples, "autoheal_enabled") == 1
    assert value(samples, "autoheal_dry_run") == 0
    assert value(samples, "autoheal_circuit_open") == 0
    assert value(samples, "autoheal_queue_depth") == 0
    assert not Switch.objects.exists(), "a scrape must not write"

    Switch.objects.create(pk=1, enabled=False, circuit_open=True)
    policy = _policy()
    alert = _alert()
    Job.objects.create(
        policy=policy,
        policy_name=policy.name,
        alert=alert,
        action=policy.action,
        not_before=timezone.now() - timedelta(minutes=20),
    )
    settings.AUTOHEAL_DRY_RUN = True

    samples = scrape(client)

    assert value(samples, "autoheal_enabled") == 0
    assert value(samples, "autoheal_dry_run") == 1
    assert value(samples, "autoheal_circuit_open") == 1
    assert value(samples, "autoheal_queue_depth") == 1
    assert value(samples, "autoheal_queue_oldest_age_seconds") >= 20 * 60


@pytest.mark.django_db
def test_cooldown_remaining_counts_down_from_the_latest_real_action(client: Any) -> None:
    policy = _policy(cooldown=300)
    now = timezone.now()
    ran = _alert("ContainerUnhealthy", "f1")
    Job.objects.create(
        policy=policy,
        policy_name=policy.name,
        alert=ran,
        action=policy.action,
        state=Job.State.OK,
        started_at=now - timedelta(seconds=60),
    )
    long_ago = _alert("DiskFull", "f2")
    Job.objects.create(
        policy=policy,
        policy_name=policy.name,
        alert=long_ago,
        action=policy.action,
        state=Job.State.OK,
        started_at=now - timedelta(seconds=900),
    )
    rehearsal = _alert("Rehearsal", "f3")
    Job.objects.create(
        policy=policy,
        policy_name=policy.name,
        alert=rehearsal,
        action=policy.action,
        state=Job.State.OK,
        dry_run=True,
        started_at=now,
    )

    only_logged = _alert("OnlyLogged", "f4")
    Job.objects.create(
        policy=policy, policy_name=policy.name, alert=only_logged, action="log_only", state=Job.State.OK, started_at=now
    )

    samples = scrape(client)

    assert value(samples, "autoheal_cooldown_remaining_seconds", alertname="OnlyLogged") is None
    remaining = value(samples, "autoheal_cooldown_remaining_seconds", alertname="ContainerUnhealthy")
    assert remaining is not None and 0 < remaining <= 240
    assert value(samples, "autoheal_cooldown_remaining_seconds", alertname="DiskFull") is None
    assert value(samples, "autoheal_cooldown_remaining_seconds", alertname="Rehearsal") is None


@pytest.mark.django_db
def test_false_positive_ratio_is_marked_actions_over_actions_run_in_30_days(client: Any) -> None:
    policy = _policy()
    now = timezone.now()
    for i, (verdict, finished) in enumerate(
        [(True, now), (False, now), (None, now), (None, now), (True, now - timedelta(days=40))]
    ):
        Job.objects.create(
            policy=policy,
            policy_name=policy.name,
            alert=_alert(fingerprint=f"f{i}"),
            action=policy.action,
            state=Job.State.OK,
            started_at=finished,
            finished_at=finished,
            false_positive=verdict,
        )

    samples = scrape(client)

    assert value(samples, "autoheal_false_positive_ratio_30d") == pytest.approx(0.25)


@pytest.mark.django_db(transaction=True)
def test_webhook_answers_are_counted_by_code_even_when_the_request_rolled_back(client: Any) -> None:
    started = timezone.now().timestamp()
    for _ in range(3):
        webhook_request_count(code=202)
    webhook_request_count(code=401)
    with pytest.raises(RuntimeError), transaction.atomic():
        webhook_request_count(code=400)
        raise RuntimeError("the request's transaction rolls back")

    samples = scrape(client)

    assert value(samples, "autoheal_webhook_requests_total", code="202") == 3
    assert value(samples, "autoheal_webhook_requests_total", code="401") == 1
    assert value(samples, "autoheal_webhook_requests_total", code="400") == 1
    assert services.pending_webhook_counts.pending() == {}
    accepted_at = value(samples, "autoheal_webhook_last_accepted_timestamp")
    assert accepted_at is not None and accepted_at >= started


@pytest.mark.django_db(transaction=True)
def test_counting_a_webhook_answer_writes_nothing_on_the_request_path(
    client: Any, django_assert_num_queries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "WEBHOOK_FLUSH_SECONDS", 0.2)
    with django_assert_num_queries(0):
        webhook_request_count(code=202)
    # The background flusher stores it shortly after, without a scrape.
    stored = MetricSeries.objects.filter(name="autoheal_webhook_requests_total", labels=labels_key({"code": "202"}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not stored.exists():
        time.sleep(0.05)
    assert stored.get().value == 1
    assert services.pending_webhook_counts.pending() == {}


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_lose_no_increment(client: Any) -> None:
    threads_count, per_thread = 8, 25
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(per_thread):
                webhook_request_count(code=202)
                audit_record(kind="action_ok", alertname="Busy")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors
    samples = scrape(client)
    assert value(samples, "autoheal_webhook_requests_total", code="202") == threads_count * per_thread
    assert value(samples, "autoheal_actions_total", alertname="Busy", result="ok") == threads_count * per_thread


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_work_done_by_another_process_shows_in_this_process_metrics(client: Any) -> None:
    audit_record(kind="action_ok", alertname="ContainerUnhealthy")
    code = (
        "from audit.services import audit_record; from observability.services import webhook_request_count; "
        "audit_record(kind='action_fail', alertname='ContainerUnhealthy', data={'duration_seconds': 1}); "
        "audit_record(kind='action_ok', alertname='ContainerUnhealthy'); webhook_request_count(code=503)"
    )
    env = {**os.environ, "DATABASE_URL": _database_url(), "DJANGO_SETTINGS_MODULE": "autoheal_site.settings"}
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, check=True, timeout=60)

    samples = scrape(client)

    assert value(samples, "autoheal_actions_total", alertname="ContainerUnhealthy", result="ok") == 2
    assert value(samples, "autoheal_action_failures_total", alertname="ContainerUnhealthy") == 1
    assert value(samples, "autoheal_webhook_requests_total", code="503") == 1
    # A collector built from scratch (a restarted process) reads the same totals.
    fresh = {s.name: s.value for family in AutohealCollector().collect() for s in family.samples if not s.labels}
    assert fresh["autoheal_action_duration_seconds_count"] == 1


@pytest.mark.prometheus
@pytest.mark.django_db
def test_exposition_passes_promtool_lint(client: Any, tmp_path: Path) -> None:
    audit_record(kind="action_fail", alertname="ContainerUnhealthy", data={"duration_seconds": 1})
    audit_record(kind="action_verified", alertname="ContainerUnhealthy", data={"time_to_remediate_seconds": 30})
    webhook_request_count(code=202)
    body = client.get("/metrics").content.decode()

    result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "autoheal_audit_write_seconds_bucket" in body
    assert "django_http_requests" in body


INTERFACE_METRICS = (
    "autoheal_enabled",
    "autoheal_dry_run",
    "autoheal_actions_total",
    "autoheal_action_last_timestamp",
    "autoheal_cooldown_remaining_seconds",
    "autoheal_event_total",
    "autoheal_action_failures_total",
    "autoheal_last_event_timestamp",
    "autoheal_audit_write_seconds",
    "autoheal_queue_depth",
    "autoheal_circuit_open",
    "autoheal_action_duration_seconds",
    "autoheal_time_to_remediate_seconds",
    "autoheal_webhook_requests_total",
)


@pytest.mark.django_db
def test_every_metric_of_the_interface_is_exposed_with_its_type(client: Any) -> None:
    body = client.get("/metrics").content.decode()
    types = dict(line.split()[2:4] for line in body.splitlines() if line.startswith("# TYPE autoheal_"))

    for name in INTERFACE_METRICS:
        assert name in types, f"{name} is missing from /metrics"
    assert types["autoheal_actions_total"] == "counter"
    assert types["autoheal_audit_write_seconds"] == "histogram"
    assert types["autoheal_enabled"] == "gauge"
    assert "# TYPE django_http_requests" in body, "django-prometheus request metrics stay"


def test_without_a_database_metrics_say_so_and_webhook_counts_wait(tmp_path: Path) -> None:
    code = (
        "from prometheus_client import generate_latest, REGISTRY; "
        "from observability import services; services.webhook_request_count(code=503); "
        "print(generate_latest(REGISTRY).decode()); print('pending', services.pending_webhook_counts.pending())"
    )
    env = {
        **os.environ,
        # Nothing listens on port 1 of loopback: a real, immediately refused database.
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/autoheal",
        "DJANGO_SETTINGS_MODULE": "autoheal_site.settings",
        "AUTOHEAL_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert "autoheal_database_up 0.0" in result.stdout
    assert "pending {503: 1}" in result.stdout
