"""Running a claimed batch of jobs: set-based for the actions that finish at once.

A ``log_only`` action touches nothing outside Autoheal, so what costs is the bookkeeping around
it. For a run of such jobs the worker does each step once for the whole run instead of once per
job, with the same guarantees as :func:`remediation.execution.run.job_run`:

1. decide every job without locks against one read of the switch row (a ``log_only`` decision
   needs no action history), and settle the jobs that do not run in one transaction (one
   ``UPDATE`` per outcome, one audit insert);
2. pass the people-in-the-loop gate (the silences come from the per-process cache; an
   approve-mode job is parked as before);
3. start them in one transaction: the switch row under a share lock (a switch change waits for
   the start, and the start for it), the jobs' rows re-read under a row lock, every job decided
   again against the locked row, then one ``UPDATE`` for ``started_at`` and the lease and one
   insert for the ``action_started`` events;
4. execute, with no heartbeat thread: the action returns at once and the lease was renewed at
   the start, so it cannot run out meanwhile;
5. finish them in one transaction: the rows locked and checked to be still this worker's, one
   ``UPDATE`` for the ``ok`` jobs, one insert for their ``action_ok`` events. Anything unusual (an
   executor error, a lease lost meanwhile) goes through :func:`outcome.job_finish` one by one.

Every other action (Docker, command, webhook, and any policy that creates a silence around its
action) keeps the one-by-one path, in claim order: destructive actions spend budget and breaker
units under the switch row's exclusive lock, and an action that takes time needs its heartbeat.
Only the jobs of that path that a lock-free decision already skips (an open breaker, the kill
switch, a resolved alert...) are settled together first, as ``job_run``'s own first pass would
settle them one by one.

Crash safety is the same as one by one: a worker killed before the start commits leaves claimed,
not started jobs (queued again when their lease runs out); killed after it, started jobs that
become ``unknown`` and are never run twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record_many
from remediation import safety, silences
from remediation.decisions import Decision, Limits
from remediation.execution.facts import audit_base, job_decision, job_spec
from remediation.execution.outcome import (
    RunOutcome,
    job_finish,
    job_settle,
    outcome_data,
    result_data,
    settle_event,
    settle_reason,
    settle_result,
)
from remediation.execution.run import execute_caught, job_run, started_event, switch_for_start
from remediation.execution.transitions import jobs_end, jobs_start
from remediation.executors import DEFAULT_TIMEOUT, ExecResult, NotAllowed, TargetMissing, executor_for, timeout_for
from remediation.gate import job_gate
from remediation.models import Action, Job, Switch

logger = logging.getLogger(__name__)

# Actions whose execution is immediate and touches nothing outside Autoheal.
BATCH_ACTIONS = frozenset({Action.LOG_ONLY})

Ran = list[tuple[Job, RunOutcome]]


def batchable(job: Job) -> bool:
    """Whether the job can take the set-based path (else the careful one-by-one path)."""
    if job.action not in BATCH_ACTIONS:
        return False
    policy = job.policy
    # Creating a silence around the action is a call to Alertmanager per job: one by one.
    return not (policy is not None and policy.silence_during_action and silences.configured())


def jobs_run(
    *, jobs: Sequence[Job], worker: str, limits: Limits | None = None, stop: threading.Event | None = None
) -> Ran:
    """Run claimed jobs in claim order: each run of batchable jobs together, the others one by one.

    Stops between steps once ``stop`` is set; the jobs not reached keep their leases and are
    queued again when those run out (they never started).
    """
    limits = limits or safety.limits_from_settings()
    ran: Ran = []
    i = 0
    while i < len(jobs):
        if stop is not None and stop.is_set():
            break
        end = i
        together = batchable(jobs[i])
        while end < len(jobs) and batchable(jobs[end]) == together:
            end += 1
        if together:
            ran.extend(batch_run(jobs=jobs[i:end], worker=worker, limits=limits))
        else:
            ran.extend(_one_by_one(jobs=jobs[i:end], worker=worker, limits=limits, stop=stop))
        i = end
    return ran


def _one_by_one(*, jobs: Sequence[Job], worker: str, limits: Limits, stop: threading.Event | None) -> Ran:
    """Jobs of the careful path: the ones a lock-free decision already skips are settled together
    (as ``job_run``'s own first pass would, one by one: in a storm behind an open breaker that is
    nearly all of them); each of the others goes through ``job_run``, which decides again."""
    now = timezone.now()
    row = Switch.objects.current()
    skipped: list[tuple[Job, Decision]] = []
    rest: list[Job] = []
    for job in jobs:
        decision = job_decision(job=job, alert=job.alert, row=row, now=now, limits=limits)
        if decision.verdict == "skip" and not decision.trip_circuit:
            skipped.append((job, decision))
        else:
            rest.append(job)
    settled = jobs_settle(pairs=skipped, limits=limits) if skipped else {}
    ran: Ran = [(job, settled[job.pk]) for job, _ in skipped]
    for job in rest:
        if stop is not None and stop.is_set():
            break
        ran.append((job, job_run(job=job, worker=worker, limits=limits)))
    return ran


def batch_run(*, jobs: Sequence[Job], worker: str, limits: Limits) -> Ran:
    """Decide, gate, start, execute and finish claimed batchable jobs together (see the module)."""
    outcomes: dict[int, RunOutcome] = {}
    now = timezone.now()
    row = Switch.objects.current()
    not_run: list[tuple[Job, Decision]] = []
    candidates: list[tuple[Job, Decision]] = []
    for job in jobs:
        decision = job_decision(job=job, alert=job.alert, row=row, now=now, limits=limits)
        (not_run if decision.verdict in ("skip", "delay") else candidates).append((job, decision))
    outcomes.update(jobs_settle(pairs=not_run, limits=limits))

    ready: list[Job] = []
    for job, decision in candidates:
        if decision.verdict == "run" and (held := job_gate(job=job, limits=limits, now=now)) is not None:
            outcomes[job.pk] = held
            continue
        try:
            executor_for(job.action).check(job_spec(job))
        except NotAllowed as exc:
            outcomes[job.pk] = job_settle(job=job, decision=Decision("skip", exc.reason, str(exc)), limits=limits)
            continue
        except Exception as exc:
            logger.warning("job %s: check failed: %s", job.pk, type(exc).__name__)
            outcomes[job.pk] = job_finish(
                job=job, result=ExecResult(ok=False, transient=True, detail=f"check failed: {exc}"), started=None
            )
            continue
        ready.append(job)

    started, lost = _start(jobs=ready, worker=worker, limits=limits, outcomes=outcomes)
    executed: list[tuple[Job, ExecResult, float]] = []
    for job in started:
        spec = job_spec(job)
        executor = executor_for(job.action)
        began = time.monotonic()
        try:
            result = execute_caught(executor, spec, timeout=timeout_for(spec, default=DEFAULT_TIMEOUT), job_id=job.pk)
        except TargetMissing as exc:
            outcomes[job.pk] = job_settle(job=job, decision=Decision("skip", exc.reason, str(exc)), limits=limits)
            continue
        executed.append((job, result, time.monotonic() - began))
    outcomes.update(jobs_finish(executed=executed, worker=worker, limits=limits))
    outcomes.update(lost)
    return [(job, outcomes[job.pk]) for job in jobs if job.pk in outcomes]


def _start(
    *, jobs: list[Job], worker: str, limits: Limits, outcomes: dict[int, RunOutcome]
) -> tuple[list[Job], dict[int, RunOutcome]]:
    """Mark the jobs started in one transaction, each decided again under the switch row's lock."""
    if not jobs:
        return [], {}
    owner = worker[:100]
    lost: dict[int, RunOutcome] = {}
    started: list[Job] = []
    with transaction.atomic():
        row = switch_for_start(destructive=False)
        now = timezone.now()
        fresh = {
            values[0]: values[1:]
            for values in Job.objects.select_for_update(of=("self",))
            .filter(pk__in=[job.pk for job in jobs])
            .values_list(*_FRESH)
        }
        not_run: list[tuple[Job, Decision]] = []
        decisions: dict[int, Decision] = {}
        for job in jobs:
            values = fresh.get(job.pk)
            if values is None or values[0] != Job.State.RUNNING or values[1] != owner:
                lost[job.pk] = RunOutcome(state=values[0] if values else "gone", reason="lease lost before start")
                continue
            _refresh(job, values)
            decision = job_decision(job=job, alert=job.alert, row=row, now=now, limits=limits)
            if decision.verdict != "run":
                not_run.append((job, decision))
                continue
            decisions[job.pk] = decision
            started.append(job)
        outcomes.update(jobs_settle(pairs=not_run, limits=limits))
        if started:
            lease = now + timedelta(seconds=settings.AUTOHEAL_LEASE_SECONDS)
            jobs_start(job_ids=[job.pk for job in started], now=now, lease_expires_at=lease)
            audit_record_many([started_event(job=job, decision=decisions[job.pk]) for job in started])
            for job in started:
                job.started_at = now
                job.lease_expires_at = lease
    return started, lost


# What a start re-reads under the row lock: everything a decision or an audit event of a claimed
# job reads that may have changed since the claim (the rest of a job is fixed once it is queued).
_FRESH = (
    "pk",
    "state",
    "lease_owner",
    "attempts",
    "host",
    "alert__status",
    "alert__acked_at",
    "policy_id",
    "policy__dry_run",
    "policy__cooldown_seconds",
    "policy__max_actions_per_hour",
)


def _refresh(job: Job, values: tuple[Any, ...]) -> None:
    """Bring a claimed job up to date with the values re-read under the lock (see ``_FRESH``)."""
    job.state, job.lease_owner, job.attempts, job.host, job.alert.status, job.alert.acked_at = values[:6]
    policy_id, dry_run, cooldown_seconds, max_actions_per_hour = values[6:]
    if policy_id is None:
        job.policy = None
    elif job.policy is not None:
        job.policy.dry_run = dry_run
        job.policy.cooldown_seconds = cooldown_seconds
        job.policy.max_actions_per_hour = max_actions_per_hour


def jobs_settle(*, pairs: list[tuple[Job, Decision]], limits: Limits) -> dict[int, RunOutcome]:
    """Settle jobs that do not run: skips and dry runs together (one ``UPDATE`` per reason and one
    audit insert); a delay or a breaker trip through :func:`outcome.job_settle` one by one."""
    outcomes: dict[int, RunOutcome] = {}
    together: list[tuple[Job, Decision]] = []
    for job, decision in pairs:
        if decision.verdict == "delay" or decision.trip_circuit:
            outcomes[job.pk] = job_settle(job=job, decision=decision, limits=limits)
        else:
            together.append((job, decision))
    if not together:
        return outcomes
    by_reason: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for job, decision in together:
        by_reason[settle_reason(decision)][job.pk] = settle_result(decision)
    now = timezone.now()
    with transaction.atomic():
        for reason, results in by_reason.items():
            jobs_end(results=results, state=Job.State.SKIPPED, now=now, skip_reason=reason)
        audit_record_many([settle_event(job=job, decision=decision) for job, decision in together])
    for job, decision in together:
        outcomes[job.pk] = RunOutcome(state=Job.State.SKIPPED, reason=settle_reason(decision))
    return outcomes


def jobs_finish(*, executed: list[tuple[Job, ExecResult, float]], worker: str, limits: Limits) -> dict[int, RunOutcome]:
    """Record the outcomes of actions that ran: the ``ok`` ones still held by this worker in one
    transaction, anything else through :func:`outcome.job_finish` one by one."""
    outcomes: dict[int, RunOutcome] = {}
    owner = worker[:100]
    done: list[tuple[Job, ExecResult, float]] = []
    ok = [item for item in executed if item[1].ok and item[0].action == Action.LOG_ONLY]
    one_by_one = [item for item in executed if not (item[1].ok and item[0].action == Action.LOG_ONLY)]
    if ok:
        now = timezone.now()
        with transaction.atomic():
            held = set(
                Job.objects.select_for_update()
                .filter(pk__in=[job.pk for job, _, _ in ok], state=Job.State.RUNNING, lease_owner=owner)
                .values_list("pk", flat=True)
            )
            for item in ok:
                (done if item[0].pk in held else one_by_one).append(item)
            if done:
                # A log_only action needs no verification (as in outcome.job_finish).
                jobs_end(
                    results={job.pk: result_data(result) for job, result, _ in done},
                    state=Job.State.OK,
                    now=now,
                    verify_state=Job.Verify.NONE,
                    verify_deadline=None,
                )
                audit_record_many(
                    [
                        {
                            "kind": "action_ok",
                            "message": result.detail,
                            "data": outcome_data(job=job, result=result, duration=round(seconds, 3)),
                            **audit_base(job),
                        }
                        for job, result, seconds in done
                    ]
                )
        for job, _, _ in done:
            outcomes[job.pk] = RunOutcome(state=Job.State.OK)
    for job, result, seconds in one_by_one:
        outcomes[job.pk] = job_finish(job=job, result=result, started=seconds, limits=limits)
    return outcomes
