"""The worker loop against PostgreSQL: guards at execution time, retries, leases, verification."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone

from audit.models import AuditEvent
from remediation import safety, wakeup
from remediation.execution.facts import job_decision
from remediation.execution.leases import job_claim, job_claim_many, leases_expire
from remediation.execution.run import job_run
from remediation.models import Alert, Job, Switch
from remediation.tests.exec_helpers import drain, drain_concurrently, events, kinds, make_alert, make_job, make_policy
from remediation.worker import Worker

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_log_only_job_runs_once_and_records_start_and_duration():
    policy = make_policy(action="log_only")
    job = make_job(policy=policy, alert=make_alert())
    drain()
    job.refresh_from_db()
    assert job.state == Job.State.OK
    assert kinds(fingerprint=job.alert.fingerprint) == ["action_started", "action_ok"]
    ok = events("action_ok")[0]
    assert ok.data["duration_seconds"] >= 0
    assert job.verify_state == Job.Verify.NONE


def test_a_resolved_incident_is_skipped_and_nothing_runs(tmp_path: Path):
    marker = tmp_path / "ran"
    policy = make_policy(action="command", params={"argv": ["touch", str(marker)]})
    alert = make_alert(status=Alert.Status.RESOLVED, resolved_at=timezone.now())
    job = make_job(policy=policy, alert=alert)
    drain()
    job.refresh_from_db()
    assert (job.state, job.skip_reason) == ("skipped", "resolved")
    assert events("action_skipped")[0].data["reason"] == "resolved"
    assert not marker.exists()


def test_kill_switch_and_pause_skip_with_their_reason(tmp_path: Path):
    marker = tmp_path / "ran"
    policy = make_policy(action="command", params={"argv": ["touch", str(marker)]})
    safety.switch_set(enabled=False, actor="alice", reason="maintenance")
    first = make_job(policy=policy, alert=make_alert())
    drain()
    safety.switch_set(enabled=False, pause_minutes=30, actor="alice")
    safety.switch_set(enabled=True, actor="alice")
    safety.switch_set(pause_minutes=30, actor="alice")
    second = make_job(policy=policy, alert=make_alert())
    drain()
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.skip_reason == "disabled"
    assert second.skip_reason == "paused"
    assert [e.data["reason"] for e in events("action_skipped")] == ["disabled", "paused"]
    assert not marker.exists()


def test_env_floor_keeps_dry_run_on_whatever_the_runtime_switch_says(settings, tmp_path: Path):
    settings.AUTOHEAL_DRY_RUN = True
    marker = tmp_path / "ran"
    result = safety.switch_set(dry_run=False, actor="alice")
    assert result.effective.dry_run is True
    assert "AUTOHEAL_DRY_RUN=true is a floor" in result.notes[0]
    job = make_job(policy=make_policy(action="command", params={"argv": ["touch", str(marker)]}), alert=make_alert())
    drain()
    job.refresh_from_db()
    assert (job.state, job.skip_reason) == ("skipped", "dry_run")
    assert "AUTOHEAL_DRY_RUN" in events("action_dry_run")[0].message
    assert not marker.exists()


def test_commands_with_hostile_label_values_run_nothing(tmp_path: Path):
    marker = tmp_path / "ran"
    policy = make_policy(action="command", params={"argv": ["touch", str(marker) + "-{{ labels.container }}"]})
    for value in ("; rm -rf /", "$(id)", "--privileged"):
        make_job(policy=policy, alert=make_alert(labels={"alertname": "X", "container": value}), target=value)
    drain()
    skipped = events("action_skipped")
    assert [e.data["reason"] for e in skipped] == ["not_allowed"] * 3
    assert all("not safe for a command argument" in e.message for e in skipped)
    assert not list(tmp_path.iterdir())
    assert not events("action_started")


def test_a_safe_label_reaches_the_command_as_one_exact_argument(tmp_path: Path):
    policy = make_policy(action="command", params={"argv": ["echo", "restart", "{{ labels.container }}", "--now"]})
    make_job(policy=policy, alert=make_alert(labels={"alertname": "X", "container": "web-1.prod:8080"}))
    drain()
    ok = events("action_ok")[0]
    assert ok.data["output"]["argv"] == ["echo", "restart", "web-1.prod:8080", "--now"]
    assert ok.data["output"]["stdout"] == "restart web-1.prod:8080 --now\n"


def test_transient_failure_is_retried_with_backoff_up_to_the_bound(settings):
    settings.AUTOHEAL_MAX_RETRIES = 2
    settings.AUTOHEAL_BACKOFF_BASE_SECONDS = 1
    # A loopback port nothing listens on: connection refused is transient.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    settings.AUTOHEAL_WEBHOOK_ACTION_ALLOW = [f"http://127.0.0.1:{port}/"]
    policy = make_policy(action="webhook", params={"url": url})
    job = make_job(policy=policy, alert=make_alert())
    for _ in range(3):
        drain()
        job.refresh_from_db()
        Job.objects.filter(pk=job.pk, state="queued").update(not_before=timezone.now())
    job.refresh_from_db()
    assert job.state == Job.State.FAIL
    assert kinds(kind__in=["action_retry", "action_fail"]) == ["action_retry", "action_retry", "action_fail"]
    assert [e.data["retry_in_seconds"] for e in events("action_retry")] == [1, 2]
    assert events("action_fail")[0].data["error"] == "connection failed"


def test_a_job_whose_worker_died_mid_action_becomes_unknown_and_is_never_rerun(tmp_path: Path):
    marker = tmp_path / "ran"
    policy = make_policy(action="command", params={"argv": ["touch", str(marker)]})
    job = make_job(policy=policy, alert=make_alert())
    long_ago = timezone.now() - timedelta(minutes=5)
    Job.objects.filter(pk=job.pk).update(
        state="running", lease_owner="dead-worker", lease_expires_at=long_ago, started_at=long_ago, attempts=1
    )
    drain()
    drain()
    job.refresh_from_db()
    assert job.state == Job.State.UNKNOWN
    unknown = events("action_unknown")
    assert len(unknown) == 1 and unknown[0].data["worker"] == "dead-worker"
    assert not events("action_started")
    assert not marker.exists()


def test_a_job_claimed_but_never_started_is_queued_again_and_runs_once():
    job = make_job(policy=make_policy(action="log_only"), alert=make_alert())
    Job.objects.filter(pk=job.pk).update(
        state="running", lease_owner="dead-worker", lease_expires_at=timezone.now() - timedelta(seconds=1), attempts=1
    )
    drain()
    job.refresh_from_db()
    assert job.state == Job.State.OK
    assert kinds(kind__startswith="action_") == ["action_retry", "action_started", "action_ok"]


def test_resolution_in_time_is_verified_with_the_time_to_remediate(tmp_path: Path):
    policy = make_policy(action="command", params={"argv": ["true"]}, verify_within_seconds=60)
    alert = make_alert(starts_at=timezone.now() - timedelta(seconds=90))
    job = make_job(policy=policy, alert=alert)
    drain()
    job.refresh_from_db()
    assert (job.state, job.verify_state) == ("ok", "pending")
    Alert.objects.filter(pk=alert.pk).update(
        status="resolved", resolved_at=timezone.now(), ends_at=alert.starts_at + timedelta(seconds=100)
    )
    drain()
    job.refresh_from_db()
    assert job.verify_state == Job.Verify.VERIFIED
    assert events("action_verified")[0].data["time_to_remediate_seconds"] == 100.0


def test_ineffective_actions_are_reattempted_within_budget_then_escalated(settings):
    settings.AUTOHEAL_BACKOFF_BASE_SECONDS = 1
    policy = make_policy(action="command", params={"argv": ["true"]}, max_actions_per_hour=2, verify_within_seconds=1)
    alert = make_alert()
    make_job(policy=policy, alert=alert)
    for _ in range(2):
        drain()
        # The verification window passes with the alert still firing.
        Job.objects.filter(verify_state="pending").update(verify_deadline=timezone.now() - timedelta(seconds=1))
        drain()
        queued = Job.objects.filter(state="queued").first()
        if queued is not None:
            last_start = Job.objects.exclude(started_at=None).latest("started_at").started_at
            assert queued.not_before >= last_start + timedelta(seconds=1)  # the backoff
        # Time passes (the worker reads the clock): move the history and the queue 60 s back.
        Job.objects.exclude(started_at=None).update(started_at=F("started_at") - timedelta(seconds=60))
        Job.objects.filter(state="queued").update(not_before=timezone.now())
    drain()
    jobs = list(Job.objects.filter(alert=alert).order_by("attempt"))
    assert [(j.attempt, j.state, j.verify_state) for j in jobs] == [(1, "ok", "ineffective"), (2, "ok", "ineffective")]
    escalated = events("incident_escalated")
    assert len(escalated) == 1 and escalated[0].data["escalated"] is True and escalated[0].data["attempts"] == 2
    alert.refresh_from_db()
    assert alert.escalated_at is not None
    assert len(events("action_ineffective")) == 2


def test_the_circuit_opens_at_its_limit_and_stops_destructive_actions(settings):
    settings.AUTOHEAL_CIRCUIT_MAX_ACTIONS = 2
    policy = make_policy(action="command", params={"argv": ["true"]}, max_actions_per_hour=10)
    for name in ("a", "b", "c"):
        make_job(policy=policy, alert=make_alert(labels={"alertname": "X", "container": name}), target=name)
    drain()
    assert len(events("action_started")) == 2
    assert len(events("circuit_open")) == 1
    assert [e.data["reason"] for e in events("action_skipped")] == ["circuit_open"]
    assert Switch.objects.get(pk=1).circuit_open
    assert safety.circuit_close(actor="alice", reason="checked the hosts")
    assert events("circuit_closed")[0].actor == "alice"
    make_job(policy=policy, alert=make_alert(labels={"alertname": "X", "container": "d"}), target="d")
    drain()
    assert len(events("action_started")) == 3


def test_after_the_cooloff_one_probe_closes_the_circuit(settings):
    settings.AUTOHEAL_CIRCUIT_COOLOFF_SECONDS = 60
    safety.circuit_trip(reason="test", now=timezone.now() - timedelta(seconds=120))
    policy = make_policy(action="command", params={"argv": ["true"]})
    make_job(policy=policy, alert=make_alert())
    drain()
    assert events("action_started")[0].data["probe"] is True
    assert events("circuit_closed")[0].actor == "autoheal"
    assert not Switch.objects.get(pk=1).circuit_open


def test_an_expired_pause_ends_by_itself_and_is_audited():
    safety.switch_set(pause_minutes=1, actor="alice")
    Switch.objects.filter(pk=1).update(paused_until=timezone.now() - timedelta(seconds=1))
    drain()
    changes = events("switch_changed")
    assert [c.actor for c in changes] == ["alice", "autoheal"]
    assert Switch.objects.get(pk=1).paused_until is None


def test_two_claimers_never_get_the_same_job():
    policy = make_policy(action="log_only")
    for _ in range(20):
        make_job(policy=policy, alert=make_alert())
    claimed: list[int] = []
    lock = threading.Lock()

    def claim_all(name: str) -> None:
        try:
            while (job := job_claim(worker=name)) is not None:
                with lock:
                    claimed.append(job.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 20
    assert len(set(claimed)) == 20


def test_workers_claiming_batches_never_get_the_same_job():
    policy = make_policy(action="log_only")
    for _ in range(50):
        make_job(policy=policy, alert=make_alert())
    claimed: list[int] = []
    lock = threading.Lock()

    def claim_batches(name: str) -> None:
        try:
            while jobs := job_claim_many(worker=name, limit=4):
                with lock:
                    claimed.extend(job.pk for job in jobs)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim_batches, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 50
    assert len(set(claimed)) == 50
    assert Job.objects.filter(state=Job.State.RUNNING, attempts=1).count() == 50


def test_a_batch_claim_takes_several_jobs_in_one_transaction(django_assert_num_queries):
    policy = make_policy(action="log_only")
    for _ in range(10):
        make_job(policy=policy, alert=make_alert())
    with django_assert_num_queries(5):
        # One transaction however many jobs: SELECT ... FOR UPDATE SKIP LOCKED, UPDATE, re-read.
        jobs = job_claim_many(worker="w", limit=8)
    assert len(jobs) == 8
    assert {job.lease_owner for job in jobs} == {"w"}
    assert Job.objects.filter(state=Job.State.QUEUED).count() == 2


def test_claiming_a_job_costs_a_fixed_number_of_queries(django_assert_num_queries):
    make_job(policy=make_policy(action="log_only"), alert=make_alert())
    with django_assert_num_queries(5):
        # SAVEPOINT-free transaction: SELECT ... FOR UPDATE SKIP LOCKED, UPDATE, re-read with joins.
        assert job_claim(worker="w") is not None


def test_a_notification_from_another_connection_wakes_a_waiting_worker():
    wakeup.listen()
    try:
        time.sleep(0.5)  # the listener's LISTEN is in place
        wakeup.wait_for_jobs(0)
        started = threading.Event()
        woke: list[bool] = []

        def wait() -> None:
            started.set()
            woke.append(wakeup.wait_for_jobs(20))

        waiter = threading.Thread(target=wait)
        waiter.start()
        started.wait()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [wakeup.CHANNEL])
        waiter.join(timeout=25)
        assert woke == [True]
    finally:
        wakeup.stop_listening()


@pytest.mark.redis
def test_redis_wakeup_reaches_a_subscriber(settings):
    import os

    settings.AUTOHEAL_WAKEUP = "redis"
    settings.REDIS_URL = os.environ["AUTOHEAL_TEST_REDIS_URL"]
    wakeup.listen()
    try:
        time.sleep(0.5)
        wakeup.wait_for_jobs(0)
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(wakeup.wait_for_jobs(20)))
        waiter.start()
        client.publish(wakeup.REDIS_CHANNEL, "1")
        client.close()
        waiter.join(timeout=25)
        assert got == [True]
    finally:
        wakeup.stop_listening()


def test_worker_stop_returns_promptly_from_an_idle_wait():
    worker = Worker(name="stopper", idle_sleep=30)
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    time.sleep(0.5)
    worker.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_audit_events_of_a_run_name_the_alert_policy_and_target():
    policy = make_policy(action="log_only", name="record-it")
    alert = make_alert(labels={"alertname": "DiskFull", "container": "db"})
    make_job(policy=policy, alert=alert, target="db")
    drain()
    started = AuditEvent.objects.get(kind="action_started")
    assert (started.alertname, started.policy, started.target, started.fingerprint) == (
        "DiskFull",
        "record-it",
        "db",
        alert.fingerprint,
    )


def test_an_action_that_outlives_its_lease_stays_unknown_but_its_real_outcome_is_recorded(tmp_path: Path):
    done = tmp_path / "done"
    policy = make_policy(action="command", params={"argv": ["sh", "-c", f"sleep 1.5; touch {done}"]})
    job = make_job(policy=policy, alert=make_alert())
    claimed = job_claim(worker="stalled")
    assert claimed is not None

    def run() -> None:
        try:
            job_run(job=claimed, worker="stalled")
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    from remediation.tests.exec_helpers import wait_until

    wait_until(lambda: events("action_started"), timeout=10)
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert leases_expire() == 1
    thread.join(timeout=30)
    job.refresh_from_db()
    assert done.exists()
    assert kinds(kind__startswith="action_") == ["action_started", "action_unknown", "action_ok"]
    assert events("action_ok")[0].data["after_unknown"] is True
    assert job.state == Job.State.OK
    drain()
    assert len(events("action_started")) == 1


def test_a_dry_run_shows_the_exact_argv_it_would_run_and_no_secret_parameters(tmp_path: Path, settings):
    settings.AUTOHEAL_WEBHOOK_ACTION_ALLOW = ["http://127.0.0.1:9/"]
    safety.switch_set(dry_run=True, actor="alice")
    command = make_policy(action="command", params={"argv": ["touch", str(tmp_path / "{{ labels.container }}")]})
    hook = make_policy(
        action="webhook",
        params={
            "url": "http://127.0.0.1:9/hook?token=abc",
            "allow": ["http://127.0.0.1:9/"],
            "headers": {"X-Key": "literal-secret"},
        },
    )
    alert = make_alert(labels={"alertname": "X", "container": "web-1"})
    make_job(policy=command, alert=alert, target="web-1")
    make_job(policy=hook, alert=alert, target="web-1")
    drain()
    dry = events("action_dry_run")
    assert dry[0].data["argv"] == ["touch", str(tmp_path / "web-1")]
    assert dry[1].data["url"] == "http://127.0.0.1:9/hook"
    assert "literal-secret" not in str(dry[1].data) and "token=abc" not in str(dry[1].data)
    assert not list(tmp_path.iterdir())


def test_deciding_a_job_costs_the_same_queries_whatever_the_history(django_assert_num_queries):
    policy = make_policy(action="command", params={"argv": ["true"]}, max_actions_per_hour=100)
    now = timezone.now()
    for minutes in range(1, 8):
        done = make_job(policy=policy, alert=make_alert(), target="web")
        Job.objects.filter(pk=done.pk).update(state="ok", started_at=now - timedelta(minutes=minutes))
    job = make_job(policy=policy, alert=make_alert(), target="web")
    job = Job.objects.select_related("alert", "policy").get(pk=job.pk)
    limits = safety.limits_from_settings()
    # Two counts for the breaker and one bounded read of the target's history.
    with django_assert_num_queries(3):
        decision = job_decision(job=job, alert=job.alert, row=None, now=now, limits=limits)
    # Seven actions a minute apart: the backoff has reached its 5-minute cap.
    assert (decision.verdict, decision.until) == ("delay", now - timedelta(minutes=1) + timedelta(seconds=300))


def test_concurrent_workers_never_spend_more_than_the_budget_on_one_target(settings):
    settings.AUTOHEAL_BACKOFF_BASE_SECONDS = 0
    policy = make_policy(action="command", params={"argv": ["true"]}, max_actions_per_hour=3, cooldown_seconds=0)
    for _ in range(12):
        make_job(policy=policy, alert=make_alert(labels={"alertname": "X", "container": "web"}), target="web")

    drain_concurrently(4, max_ticks=30)
    assert len(events("action_started")) == 3
    assert sorted(e.data["reason"] for e in events("action_skipped")) == ["budget"] * 9
    assert not Job.objects.filter(state__in=["queued", "running"]).exists()


def test_deciding_reads_the_action_history_only_when_the_decision_can_use_it(django_assert_num_queries):
    limits = safety.limits_from_settings()
    now = timezone.now()
    log_job = make_job(policy=make_policy(action="log_only"), alert=make_alert())
    restart_job = make_job(policy=make_policy(action="restart_container"), alert=make_alert())
    closed = Switch.objects.get_or_create(pk=1)[0]
    with django_assert_num_queries(0):
        assert job_decision(job=log_job, alert=log_job.alert, row=closed, now=now, limits=limits).verdict == "run"
    with django_assert_num_queries(3):
        # Two breaker counts and the target's history.
        assert (
            job_decision(job=restart_job, alert=restart_job.alert, row=closed, now=now, limits=limits).verdict == "run"
        )
    safety.circuit_trip(reason="test", now=now)
    opened = Switch.objects.get(pk=1)
    with django_assert_num_queries(0):
        decision = job_decision(job=restart_job, alert=restart_job.alert, row=opened, now=now, limits=limits)
    assert (decision.verdict, decision.reason) == ("skip", "circuit_open")


def test_log_only_starts_share_the_switch_row_while_destructive_starts_and_switch_changes_wait():
    from django.db import OperationalError, transaction

    from remediation.execution.run import switch_for_start

    Switch.objects.get_or_create(pk=1)
    holding = threading.Event()
    release = threading.Event()

    def log_only_start_in_progress() -> None:
        try:
            with transaction.atomic():
                switch_for_start(destructive=False)
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=log_only_start_in_progress)
    thread.start()
    try:
        assert holding.wait(30)

        def attempt(destructive: bool | None) -> bool:
            """True if the lock came within the timeout (``destructive=None``: a switch change)."""
            try:
                with transaction.atomic():
                    with connection.cursor() as cursor:
                        cursor.execute("SET LOCAL lock_timeout = '300ms'")
                    if destructive is None:
                        safety.switch_locked().save()
                    else:
                        switch_for_start(destructive=destructive)
                return True
            except OperationalError:
                return False

        assert attempt(False), "a second log-only start does not wait"
        assert not attempt(True), "a destructive start waits for the log-only start"
        assert not attempt(None), "a switch change waits for the log-only start"
    finally:
        release.set()
        thread.join(30)
