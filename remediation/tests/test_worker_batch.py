"""The set-based path for a claimed batch of log_only jobs: same outcomes and audit events as one by
one, constant round trips per batch, the same guards under the switch row's lock, crash safety."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from remediation import safety
from remediation.execution.batch import batch_run, batchable, jobs_run
from remediation.execution.leases import job_claim_many, leases_expire
from remediation.execution.run import job_run
from remediation.models import Alert, Job, Mode, Switch
from remediation.tests.exec_helpers import drain, drain_concurrently, events, kinds, make_alert, make_job, make_policy
from remediation.worker import CLAIM_BATCH, CLAIM_BATCH_MAX, Worker, next_claim_size

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WORKER = "batch-worker"


def _log_jobs(count: int, **fields: object) -> list[Job]:
    policy = make_policy(action="log_only")
    return [make_job(policy=policy, alert=make_alert(), **fields) for _ in range(count)]


def _run_claimed(limit: int) -> list[tuple[Job, str]]:
    jobs = job_claim_many(worker=WORKER, limit=limit)
    return [(job, outcome.state) for job, outcome in jobs_run(jobs=jobs, worker=WORKER)]


def test_a_batch_of_log_only_jobs_costs_the_same_round_trips_whatever_its_size():
    counts = {}
    # The first batch also warms per-process state (the metric series rows); not counted.
    for size in (1, 4, 40):
        _log_jobs(size)
        jobs = job_claim_many(worker=WORKER, limit=size)
        assert len(jobs) == size
        with CaptureQueriesContext(connection) as queries:
            ran = jobs_run(jobs=jobs, worker=WORKER)
        assert [outcome.state for _, outcome in ran] == [Job.State.OK] * size
        counts[size] = len(queries)
    assert counts[40] == counts[4], counts
    # Switch read; start: switch share lock, jobs re-read, one UPDATE, the audit insert; finish:
    # jobs locked, one UPDATE, the audit insert (inline chaining adds its lock, read, savepoints).
    assert counts[40] <= 25, counts
    # One by one, a single log_only job costs about as much as the whole batch.
    _log_jobs(1)
    job = job_claim_many(worker=WORKER, limit=1)[0]
    with CaptureQueriesContext(connection) as queries:
        job_run(job=job, worker=WORKER)
    assert len(queries) * 40 > 20 * counts[40], (len(queries), counts)


def test_batched_jobs_record_the_same_events_and_fields_as_one_by_one():
    single = _log_jobs(1, host="")[0]
    claimed = job_claim_many(worker=WORKER, limit=1)
    job_run(job=claimed[0], worker=WORKER)
    batched = _log_jobs(3)
    ran = _run_claimed(8)
    assert {job.pk for job, _ in ran} == {job.pk for job in batched}
    for kind in ("action_started", "action_ok"):
        one = events(kind, fingerprint=single.alert.fingerprint)[0]
        for job in batched:
            event = events(kind, fingerprint=job.alert.fingerprint)[0]
            assert set(event.data) == set(one.data), kind
            assert (event.policy, event.target, event.alertname) == (job.policy_name, job.target, job.alert.alertname)
            assert event.data["job"] == job.pk
    for job in [single, *batched]:
        job.refresh_from_db()
        assert kinds(fingerprint=job.alert.fingerprint) == ["action_started", "action_ok"]
        assert (job.state, job.verify_state, job.lease_owner, job.lease_expires_at) == ("ok", Job.Verify.NONE, "", None)
        assert job.started_at is not None and job.finished_at is not None
        assert job.result["ok"] is True and job.result["detail"].startswith("recorded ")
    started = events("action_started", fingerprint=batched[0].alert.fingerprint)[0]
    assert (started.data["try"], started.data["probe"], started.message) == (1, False, f"log_only {batched[0].target}")


def test_the_host_of_a_placed_job_is_on_its_action_events(settings):
    settings.AUTOHEAL_LOCAL_HOST = "edge-1"
    jobs = _log_jobs(2, host="edge-1")
    _run_claimed(8)
    for job in jobs:
        assert [e.data.get("host") for e in AuditEvent.objects.filter(fingerprint=job.alert.fingerprint)] == [
            "edge-1",
            "edge-1",
        ]


def test_skips_dry_runs_and_approvals_in_a_batch_keep_their_reasons_and_events():
    log = make_policy(action="log_only")
    dry = make_policy(action="log_only", dry_run=True)
    approve = make_policy(action="log_only", mode=Mode.APPROVE)
    resolved = make_job(policy=log, alert=make_alert(status=Alert.Status.RESOLVED, resolved_at=timezone.now()))
    acked = make_job(policy=log, alert=make_alert(acked_at=timezone.now(), acked_by="alice"))
    dry_job = make_job(policy=dry, alert=make_alert())
    waiting = make_job(policy=approve, alert=make_alert())
    runs = make_job(policy=log, alert=make_alert())
    outcomes = {job.pk: state for job, state in _run_claimed(8)}
    assert outcomes == {
        resolved.pk: "skipped",
        acked.pk: "skipped",
        dry_job.pk: "skipped",
        waiting.pk: "awaiting_approval",
        runs.pk: "ok",
    }
    for job, reason in ((resolved, "resolved"), (acked, "acked"), (dry_job, "dry_run")):
        job.refresh_from_db()
        assert (job.state, job.skip_reason, job.result["reason"]) == ("skipped", reason, reason)
        assert job.lease_owner == "" and job.started_at is None
    assert [e.data["reason"] for e in events("action_skipped")] == ["resolved", "acked"]
    assert set(events("action_skipped")[0].data) == {"job", "action", "attempt", "reason"}
    dry_event = events("action_dry_run")[0]
    assert dry_event.message.startswith(f"would log_only {dry_job.target}: dry-run (policy)")
    assert events("approval_requested")[0].data["job"] == waiting.pk
    assert kinds(fingerprint=runs.alert.fingerprint) == ["action_started", "action_ok"]


def test_kill_switch_and_pause_skip_the_whole_batch():
    jobs = _log_jobs(5)
    safety.switch_set(enabled=False, actor="alice", reason="maintenance")
    _run_claimed(8)
    assert [e.data["reason"] for e in events("action_skipped")] == ["disabled"] * 5
    assert not events("action_started")
    safety.switch_set(enabled=True, actor="alice")
    safety.switch_set(pause_minutes=30, actor="alice")
    more = _log_jobs(3)
    _run_claimed(8)
    assert (
        sorted(Job.objects.filter(pk__in=[j.pk for j in more]).values_list("skip_reason", flat=True)) == ["paused"] * 3
    )
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], state="skipped").count() == 5


def test_a_switch_change_committed_while_the_batch_waits_for_the_lock_is_obeyed():
    """The lock-free pass saw the switch on; the start waits for the switch change and re-decides."""
    Switch.objects.get_or_create(pk=1)
    jobs = _log_jobs(4)
    claimed = job_claim_many(worker=WORKER, limit=8)
    locked = threading.Event()
    release = threading.Event()

    def switch_off_meanwhile() -> None:
        try:
            with transaction.atomic():
                row = safety.switch_locked()
                locked.set()
                release.wait(30)
                row.enabled = False
                row.save()
        finally:
            connection.close()

    thread = threading.Thread(target=switch_off_meanwhile)
    thread.start()
    assert locked.wait(30)
    timer = threading.Timer(0.5, release.set)
    timer.start()
    try:
        ran = batch_run(jobs=claimed, worker=WORKER, limits=safety.limits_from_settings())
    finally:
        release.set()
        thread.join(30)
        timer.cancel()
    assert {outcome.reason for _, outcome in ran} == {"disabled"}
    assert not events("action_started")
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], state="skipped", skip_reason="disabled").count() == 4


def test_a_job_whose_lease_was_lost_before_the_start_is_left_alone():
    jobs = _log_jobs(3)
    claimed = job_claim_many(worker=WORKER, limit=8)
    # Another worker took the second job over (its lease ran out and it was claimed again).
    Job.objects.filter(pk=jobs[1].pk).update(lease_owner="other-worker")
    ran = {job.pk: outcome for job, outcome in jobs_run(jobs=claimed, worker=WORKER)}
    assert ran[jobs[1].pk].reason == "lease lost before start"
    assert [ran[jobs[0].pk].state, ran[jobs[2].pk].state] == ["ok", "ok"]
    assert not AuditEvent.objects.filter(fingerprint=jobs[1].alert.fingerprint).exists()
    assert Job.objects.get(pk=jobs[1].pk).state == Job.State.RUNNING


def test_a_worker_dying_mid_batch_leaves_started_jobs_unknown_and_unstarted_ones_queued(settings):
    from remediation.execution import batch

    started_jobs = _log_jobs(2)
    claimed = job_claim_many(worker=WORKER, limit=2)
    # The worker dies right after the start committed, before the actions' outcomes are recorded.
    started, _ = batch._start(jobs=claimed, worker=WORKER, limits=safety.limits_from_settings(), outcomes={})
    assert len(started) == 2
    waiting = _log_jobs(2)
    job_claim_many(worker=WORKER, limit=2)  # claimed, never started
    later = timezone.now() + timedelta(seconds=settings.AUTOHEAL_LEASE_SECONDS + 5)
    assert leases_expire(now=later) == 4
    for job in started_jobs:
        job.refresh_from_db()
        assert job.state == Job.State.UNKNOWN
    for job in waiting:
        job.refresh_from_db()
        assert (job.state, job.started_at) == (Job.State.QUEUED, None)
    # The unknown ones never run again; the queued ones run once.
    drain()
    assert len(events("action_started")) == 4
    assert len(events("action_ok")) == 2


def test_other_actions_keep_the_one_by_one_path_in_claim_order(tmp_path):
    marker = tmp_path / "ran"
    log = make_policy(action="log_only")
    command = make_policy(action="command", params={"argv": ["touch", str(marker)]})
    first = make_job(policy=log, alert=make_alert())
    middle = make_job(policy=command, alert=make_alert())
    last = make_job(policy=log, alert=make_alert())
    assert [batchable(j) for j in (first, middle, last)] == [True, False, True]
    ran = _run_claimed(8)
    assert [(job.pk, state) for job, state in ran] == [(first.pk, "ok"), (middle.pk, "ok"), (last.pk, "ok")]
    assert marker.exists()
    started = [e.data["job"] for e in events("action_started")]
    assert started == [first.pk, middle.pk, last.pk]


def test_the_claim_grows_while_the_queue_stays_deep_with_log_only_jobs_and_falls_back():
    log = _log_jobs(1)[0]
    restart = make_job(policy=make_policy(action="restart_container"), alert=make_alert())
    assert next_claim_size(CLAIM_BATCH, [log] * CLAIM_BATCH) == 2 * CLAIM_BATCH
    assert next_claim_size(CLAIM_BATCH_MAX, [log] * CLAIM_BATCH_MAX) == CLAIM_BATCH_MAX
    assert next_claim_size(32, [log] * 5) == CLAIM_BATCH
    assert next_claim_size(32, [log] * 31 + [restart]) == CLAIM_BATCH
    Job.objects.all().delete()
    _log_jobs(150)
    worker = Worker(name="deep")
    sizes = []
    while worker.tick():
        sizes.append(worker.claim_size)
    assert max(sizes) == CLAIM_BATCH_MAX
    assert Job.objects.filter(state="ok").count() == 150


def test_concurrent_workers_draining_one_backlog_run_every_job_exactly_once():
    jobs = _log_jobs(300)

    drain_concurrently(3, max_ticks=200)
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], state="ok").count() == 300
    for kind in ("action_started", "action_ok"):
        ids = [e.data["job"] for e in events(kind)]
        assert sorted(ids) == sorted(j.pk for j in jobs), kind


def test_with_the_sealer_a_batch_leaves_its_events_pending_until_they_are_chained(settings):
    from audit.models import AuditPending
    from audit.sealer import audit_seal_all

    settings.AUTOHEAL_AUDIT_CHAIN = "sealer"
    jobs = _log_jobs(6)
    _run_claimed(8)
    assert AuditPending.objects.filter(kind__in=("action_started", "action_ok")).count() == 12
    assert audit_seal_all() == 12
    for job in jobs:
        assert kinds(fingerprint=job.alert.fingerprint) == ["action_started", "action_ok"]
