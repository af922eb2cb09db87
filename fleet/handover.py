"""The central side of the agents' work: hand a job over, start it under the guards, take reports.

A job placed on a host is claimed by that host's agent through the same claim as the central
worker (``job_claim`` with the host as placement), so a job is never taken twice. Every guard stays
central: the decision is read when the job is handed over, and decided again under the switch row's
lock when the agent asks to start, exactly as the worker does before ``action_started``. The lease
is the worker's lease: the agent renews it while its action runs, and when it stops doing so the
worker's lease expiry marks the job ``unknown`` (never re-run).

Reports are idempotent by job, attempt and claim: an agent re-sends until it hears back, and a
second copy is recognised by a database constraint and never applied again. A report that comes
after the lease expired is recorded and applied once, as the worker records a late outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.redact import redact
from audit.services import audit_record
from fleet.models import Agent, AgentReport
from fleet.placement import HOST_OFFLINE, local_hosts
from remediation import safety, silences
from remediation.decisions import Decision
from remediation.evidence import evidence_record
from remediation.execution.facts import audit_base, host_data, is_destructive, job_decision, job_spec
from remediation.execution.leases import job_claim
from remediation.execution.outcome import job_finish, job_settle, trip_if_over
from remediation.executors import DEFAULT_TIMEOUT, ExecResult, NotAllowed, timeout_for
from remediation.gate import job_gate
from remediation.models import DOCKER_ACTIONS, Job, Mode, Switch
from remediation.wakeup import CHANNEL

logger = logging.getLogger(__name__)

OFFLINE_BATCH = 50
SEEN_EVERY_SECONDS = 5.0
# What an agent's executor check may answer, as the worker's check does (remediation.executors).
REFUSAL_REASONS = ("not_allowed", "target_missing", "ambiguous_target")
POOLED = bool(settings.DATABASES["default"].get("OPTIONS", {}).get("pool"))
HANDOVER_LEASE_SECONDS = 10


class Forbidden(PermissionError):
    """An agent asked about another host's job (answered 403 and audited)."""


class Conflict(RuntimeError):
    """The job is no longer this agent's to act on (its lease was lost or it was settled)."""


def agent_worker(host: str) -> str:
    """The lease owner name of a host's agent."""
    return f"agent:{host}"[:100]


def agent_seen(*, host: str, version: str = "", engine: str = "", now: datetime | None = None) -> Agent:
    """Record that a host's agent is in touch (every authenticated request counts)."""
    now = now or timezone.now()
    updates: dict[str, Any] = {"last_seen": now}
    if version:
        updates["version"] = version[:50]
    if engine:
        updates["engine"] = engine[:200]
    agent, created = Agent.objects.get_or_create(host=host, defaults={**updates, "first_seen": now})
    if not created:
        Agent.objects.filter(pk=agent.pk).update(**updates)
    return agent


def agent_refused(*, host: str, what: str, job_id: int | None = None, other_host: str = "") -> None:
    """Audit an agent's attempt to touch another host's work (the caller answers 403)."""
    audit_record(
        kind="agent_refused",
        actor=agent_worker(host),
        message=f"the agent of host {host} was refused: {what}",
        data={"host": host, "what": what, "job": job_id, "other_host": other_host},
    )


def agent_inventory_set(*, host: str, containers: list[dict[str, Any]], now: datetime | None = None) -> Agent:
    """Replace the host's inventory of opted-in containers (names, labels, health)."""
    now = now or timezone.now()
    agent = agent_seen(host=host, now=now)
    Agent.objects.filter(pk=agent.pk).update(inventory=containers, inventory_at=now)
    agent.inventory = containers
    return agent


@dataclass
class HandOver:
    """A job handed to an agent: what its executor needs, and the claim it must echo back."""

    job: int
    claim: int
    attempt: int
    action: str
    target: str
    params: dict[str, Any]
    labels: dict[str, str]
    alertname: str
    fingerprint: str
    lease_seconds: int
    timeout_seconds: float
    capture_evidence: bool = False
    # Started at hand-over (the agent asked for it): every guard was decided under the switch lock
    # and ``action_started`` written; None for a hand-over the agent still has to start.
    go: bool | None = None
    probe: bool = False

    def as_dict(self) -> dict[str, Any]:
        started = {} if self.go is None else {"go": self.go, "probe": self.probe}
        return {
            **started,
            "capture_evidence": self.capture_evidence,
            "job": self.job,
            "claim": self.claim,
            "attempt": self.attempt,
            "action": self.action,
            "target": self.target,
            "params": self.params,
            "labels": self.labels,
            "alertname": self.alertname,
            "fingerprint": self.fingerprint,
            "lease_seconds": self.lease_seconds,
            "timeout_seconds": self.timeout_seconds,
        }


def _wants_evidence(job: Job) -> bool:
    """Whether the agent should read evidence before the action: a Docker action whose policy asks."""
    return job.action in DOCKER_ACTIONS and (job.policy is None or job.policy.capture_evidence is not False)


def _hand_over(job: Job, spec: Any, timeout: float, *, go: bool | None = None, probe: bool = False) -> HandOver:
    return HandOver(
        job=job.pk,
        claim=job.attempts,
        attempt=job.attempt,
        action=spec.action,
        target=spec.target,
        params=spec.params,
        labels=spec.labels,
        alertname=spec.alertname,
        fingerprint=spec.fingerprint,
        lease_seconds=settings.AUTOHEAL_LEASE_SECONDS,
        timeout_seconds=timeout,
        capture_evidence=_wants_evidence(job),
        go=go,
        probe=probe,
    )


def _hand_over_one(*, host: str, start: bool = False) -> HandOver | None | bool:
    """Claim one due job of the host; a job the guards stop is settled here (returns True).

    ``start``: decide the guards under the switch lock and mark the job started in the claim's own
    transaction, so the answer carries the go (one round trip instead of two).
    """
    if start:
        return _hand_over_started(host=host)
    job = job_claim(worker=agent_worker(host), hosts=(host,))
    if job is None:
        return None
    # Until the agent starts the action, a short hand-over lease: an agent that vanished while its
    # long poll was answered (the answer is lost) gives the job back within seconds, not a full lease.
    job.lease_expires_at = timezone.now() + timedelta(
        seconds=min(settings.AUTOHEAL_LEASE_SECONDS, HANDOVER_LEASE_SECONDS)
    )
    Job.objects.filter(pk=job.pk, state=Job.State.RUNNING, started_at=None).update(
        lease_expires_at=job.lease_expires_at
    )
    limits = safety.limits_from_settings()
    # The same decision the worker reads before any Docker call: kill switch, dry-run, pause,
    # budget, cooldown, backoff, breaker. A job that may not run never reaches the agent.
    decision = job_decision(job=job, alert=job.alert, row=Switch.objects.current(), now=timezone.now(), limits=limits)
    if decision.verdict in ("skip", "delay"):
        job_settle(job=job, decision=decision, limits=limits)
        return True
    if decision.verdict == "run" and job_gate(job=job, limits=limits) is not None:
        return True  # silenced, or waiting for a person: settled or parked here, never handed over
    spec = job_spec(job)
    try:
        timeout = timeout_for(spec, default=DEFAULT_TIMEOUT)
    except NotAllowed as exc:
        job_settle(job=job, decision=Decision("skip", "not_allowed", str(exc)), limits=limits)
        return True
    return _hand_over(job, spec, timeout)


def _hand_over_started(*, host: str) -> HandOver | None | bool:
    """Claim, decide under the switch lock and start one job in one transaction (one commit).

    The same decision as :func:`agent_job_start` and the worker's start, read under the lock, so
    the guards are decided exactly once per start. The lease is the full one from here: an agent
    that dies (or whose answer is lost) leaves the job ``unknown`` at lease expiry, never re-run.

    A job that must pass the people-in-the-loop gate first (silences are configured, or its policy
    asks for approval) passes it as the worker's jobs do: the claim commits, the decision is read
    without locks (a job the guards stop is never parked for approval), then silences and
    approvals (which may ask Alertmanager, so never under the switch lock), then the start.
    """
    limits = safety.limits_from_settings()
    with transaction.atomic():
        job = job_claim(worker=agent_worker(host), hosts=(host,))
        if job is None:
            return None
        if not _gate_needed(job):
            return _start_locked(job=job, host=host, limits=limits)
    first = job_decision(job=job, alert=job.alert, row=Switch.objects.current(), now=timezone.now(), limits=limits)
    if first.verdict in ("skip", "delay"):
        job_settle(job=job, decision=first, limits=limits)
        return True
    if first.verdict == "run" and job_gate(job=job, limits=limits) is not None:
        return True  # silenced, or waiting for a person: settled or parked here, never handed over
    with transaction.atomic():
        current = Job.objects.select_related("alert", "policy").filter(pk=job.pk).first()
        if current is None or current.state != Job.State.RUNNING or current.lease_owner != agent_worker(host)[:100]:
            return True  # the claim was lost meanwhile (its lease ran out): nothing to hand over
        return _start_locked(job=current, host=host, limits=limits)


def _gate_needed(job: Job) -> bool:
    policy = job.policy
    return silences.configured() or (policy is not None and policy.mode == Mode.APPROVE and job.approved_at is None)


def _start_locked(*, job: Job, host: str, limits: Any) -> HandOver | bool:
    """In the caller's transaction: the guards decided under the switch lock, then the start."""
    row = safety.switch_locked()
    now = timezone.now()
    decision = job_decision(job=job, alert=job.alert, row=row, now=now, limits=limits)
    if decision.verdict != "run":
        job_settle(job=job, decision=decision, limits=limits)
        return True
    spec = job_spec(job)
    try:
        timeout = timeout_for(spec, default=DEFAULT_TIMEOUT)
    except NotAllowed as exc:
        job_settle(job=job, decision=Decision("skip", "not_allowed", str(exc)), limits=limits)
        return True
    _mark_started(job=job, row=row, now=now, decision=decision, limits=limits, host=host)
    return _hand_over(job, spec, timeout, go=True, probe=decision.probe)


def _mark_started(*, job: Job, row: Switch, now: datetime, decision: Decision, limits: Any, host: str) -> None:
    """Under the switch lock: the job is started, ``action_started`` written, the breaker counted."""
    job.started_at = now
    job.lease_expires_at = now + timedelta(seconds=settings.AUTOHEAL_LEASE_SECONDS)
    job.result = {"probe": decision.probe}
    Job.objects.filter(pk=job.pk).update(
        started_at=job.started_at, lease_expires_at=job.lease_expires_at, result=job.result
    )
    audit_record(
        kind="action_started",
        message=f"{job.action} {job.target} on {host}".strip(),
        data={
            "job": job.pk,
            "action": job.action,
            "attempt": job.attempt,
            "try": job.attempts,
            "probe": decision.probe,
            **host_data(job),
        },
        **audit_base(job),
    )
    if is_destructive(job.action) and not decision.probe:
        trip_if_over(row=row, now=now, limits=limits, counting_start=True)


class _JobNotifier(threading.Thread):
    """One LISTEN per web process, shared by every waiting long poll (not one connection each).

    Each notification of committed jobs bumps a generation number; a poll reads the generation
    before it looks at the queue and waits for it to change, so a job committed in between is never
    missed. Without PostgreSQL (or while the listener is not connected) polls wait in short steps.
    """

    def __init__(self, dbname: str) -> None:
        super().__init__(name="fleet-job-notifier", daemon=True)
        self.dbname = dbname
        self.generation = 0
        self.connected = False
        self.changed = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def run(self) -> None:
        import psycopg

        while True:
            try:
                s = connection.settings_dict
                params = {
                    "dbname": self.dbname,
                    "user": s.get("USER") or None,
                    "password": s.get("PASSWORD") or None,
                    "host": s.get("HOST") or None,
                    "port": str(s["PORT"]) if s.get("PORT") else None,
                }
                conninfo = psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v})
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected = True
                    self._bump()  # anything committed while it was not listening is looked at
                    for _ in conn.notifies():
                        self._bump()
            except Exception as exc:
                logger.warning("fleet job notifier lost its connection (%s); reconnecting", type(exc).__name__)
            self.connected = False
            time.sleep(1.0)

    def _bump(self) -> None:
        with self.changed:
            self.generation += 1
            self.changed.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_wake, future)

    async def wait_async(self, seen: int, timeout: float) -> None:
        """:meth:`wait` for a coroutine: no thread is held while it waits."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self.changed:
            if self.generation != seen:
                return
            self._waiters.append((loop, future))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, timeout if self.connected else min(timeout, 0.5))

    def wait(self, seen: int, timeout: float) -> None:
        """Until the generation moves past ``seen`` or ``timeout`` passes (short steps if offline)."""
        with self.changed:
            self.changed.wait_for(
                lambda: self.generation != seen, timeout=timeout if self.connected else min(timeout, 0.5)
            )


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_notifier: _JobNotifier | None = None
_notifier_lock = threading.Lock()


def _job_notifier() -> _JobNotifier | None:
    """The process's notifier, started with the first long poll (PostgreSQL only)."""
    global _notifier
    if connection.vendor != "postgresql":
        return None
    with _notifier_lock:
        if _notifier is None or not _notifier.is_alive():
            # Read here, in a request thread: tests run against test_<name>, which Django set.
            _notifier = _JobNotifier(str(connection.settings_dict.get("NAME") or ""))
            _notifier.start()
        return _notifier


def agent_job_next(*, host: str, wait_seconds: float, start: bool = False) -> HandOver | None:
    """Long poll: the next job placed on the host, waiting up to ``wait_seconds`` for one.

    ``start``: the job comes already started (``go``) when the guards allow, see
    :func:`_hand_over_started`.
    """
    deadline = time.monotonic() + wait_seconds
    # Started with the first poll that has to wait (a poll that finds work never needs it).
    notifier = _notifier if _notifier is not None and _notifier.is_alive() else None
    touched = 0.0
    while True:
        seen = notifier.generation if notifier is not None else -1
        # "Last seen" needs seconds, not every wake-up: one write per few seconds of poll.
        touch = time.monotonic() - touched > SEEN_EVERY_SECONDS
        if touch:
            touched = time.monotonic()
        found = _poll_step(host=host, start=start, touch=touch)
        if isinstance(found, HandOver):
            return found
        if found is True:
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if notifier is None:
            notifier = _job_notifier()
        # Bounded wait: a job whose not_before passes (backoff) is picked up within a second. A
        # notifier just started answers at once (seen is -1), so the queue is looked at again.
        if notifier is not None:
            notifier.wait(seen, min(left, 1.0))
        else:
            time.sleep(min(left, 0.5))


def _poll_step(*, host: str, start: bool, touch: bool) -> HandOver | None | bool:
    """One look at the host's queue for either long poll (the async one runs it in a thread)."""
    found = _hand_over_one(host=host, start=start)
    if touch:
        agent_seen(host=host)  # after the hand-over: never on a job's path to its start
    if found is None and POOLED and not connection.in_atomic_block:
        # While it waits the poll holds no connection of its own: it goes back to the pool for
        # other requests (without a pool, reconnecting would only add a set-up to every hand-over).
        connection.close()
    return found


async def agent_job_next_async(*, host: str, wait_seconds: float, start: bool = False) -> HandOver | None:
    """:func:`agent_job_next` for the ASGI view: the wait holds no thread, and when the agent goes
    away (its connection closes) the view is cancelled while it waits, so no job is handed over
    to an agent that is no longer listening."""
    from asgiref.sync import sync_to_async

    deadline = time.monotonic() + wait_seconds
    notifier = _notifier if _notifier is not None and _notifier.is_alive() else None
    touched = 0.0
    step = sync_to_async(_poll_step)
    while True:
        seen = notifier.generation if notifier is not None else -1
        touch = time.monotonic() - touched > SEEN_EVERY_SECONDS
        if touch:
            touched = time.monotonic()
        found = await step(host=host, start=start, touch=touch)
        if isinstance(found, HandOver):
            return found
        if found is True:
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if notifier is None:
            notifier = await sync_to_async(_job_notifier)()
        if notifier is not None:
            await notifier.wait_async(seen, min(left, 1.0))
        else:
            await asyncio.sleep(min(left, 0.5))


def _owned(job: Job | None, *, host: str, what: str, job_id: int) -> Job:
    if job is None:
        raise Conflict(f"there is no job {job_id}")
    if job.host != host:
        agent_refused(host=host, what=what, job_id=job_id, other_host=job.host)
        raise Forbidden(f"job {job_id} is not placed on host {host}")
    return job


def agent_job_start(*, host: str, job_id: int, claim: int) -> dict[str, Any]:
    """The agent is about to act: decide every guard again under the switch lock, mark it started.

    Answers ``{"go": true}`` (``action_started`` is written) or ``{"go": false, "reason"}`` (the job
    was settled: skipped, delayed or dry run). Conflict when the lease is no longer this agent's.
    """
    limits = safety.limits_from_settings()
    worker = agent_worker(host)
    # Checked (and a refusal audited) outside the start's transaction, which a refusal rolls back.
    _owned(Job.objects.filter(pk=job_id).first(), host=host, what="start", job_id=job_id)
    with transaction.atomic():
        row = safety.switch_locked()
        now = timezone.now()
        current = Job.objects.select_related("alert", "policy").get(pk=job_id)
        if current.state != Job.State.RUNNING or current.lease_owner != worker or current.attempts != claim:
            raise Conflict(f"job {job_id} is no longer leased to this agent (state {current.state})")
        if current.started_at is not None:
            return {"go": True, "probe": bool((current.result or {}).get("probe"))}
        decision = job_decision(job=current, alert=current.alert, row=row, now=now, limits=limits)
        if decision.verdict != "run":
            outcome = job_settle(job=current, decision=decision, limits=limits)
            return {"go": False, "reason": decision.reason or decision.verdict, "state": outcome.state}
        _mark_started(job=current, row=row, now=now, decision=decision, limits=limits, host=host)
    return {"go": True, "probe": decision.probe}


def agent_job_refuse(*, host: str, job_id: int, claim: int, detail: str, reason: str = "not_allowed") -> str:
    """The agent's executor check refused the target: not_allowed (not opted in, Autoheal itself),
    target_missing or ambiguous_target (no such container on the host, or several), as the worker's."""
    current = _owned(
        Job.objects.select_related("alert", "policy").filter(pk=job_id).first(), host=host, what="refuse", job_id=job_id
    )
    if current.state != Job.State.RUNNING or current.lease_owner != agent_worker(host) or current.attempts != claim:
        raise Conflict(f"job {job_id} is no longer leased to this agent")
    # A job started at hand-over is checked by the agent after its start: a refusal then is what
    # the worker records for a target gone after its start, a skip (nothing ran on the host).
    extra = {"after_start": True} if current.started_at is not None else None
    outcome = job_settle(
        job=current, decision=Decision("skip", reason, detail[:500]), limits=safety.limits_from_settings(), extra=extra
    )
    return outcome.state


EVIDENCE_KEYS = ("container", "id", "health", "state", "logs", "logs_truncated", "log_lines", "error")
EVIDENCE_MAX_BYTES = 256 * 1024
EVIDENCE_DEPTH = 6


def _redacted(value: Any, depth: int = 0) -> Any:
    """Every string of an agent's evidence through the log redaction again (the central's own pass)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict) and depth < EVIDENCE_DEPTH:
        return {str(k)[:100]: _redacted(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list) and depth < EVIDENCE_DEPTH:
        return [_redacted(v, depth + 1) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return None


def evidence_clean(evidence: dict[str, Any]) -> dict[str, Any]:
    """An agent's evidence as the central keeps it: the known fields only, redacted, size-bounded.

    ValueError when it is larger than ``EVIDENCE_MAX_BYTES`` once cleaned.
    """
    import json

    cleaned = {key: _redacted(evidence[key]) for key in EVIDENCE_KEYS if key in evidence}
    if len(json.dumps(cleaned)) > EVIDENCE_MAX_BYTES:
        raise ValueError(f"evidence is larger than {EVIDENCE_MAX_BYTES} bytes")
    return cleaned


def agent_job_evidence(*, host: str, job_id: int, claim: int, evidence: dict[str, Any]) -> bool:
    """Record the evidence the agent read before its Docker action, as a local job's (``data.host``).

    Once per (job, claim): a resend is answered False and records nothing.
    """
    job = _owned(
        Job.objects.select_related("alert", "policy").filter(pk=job_id).first(),
        host=host,
        what="evidence",
        job_id=job_id,
    )
    if job.lease_owner != agent_worker(host) or job.attempts != claim or job.started_at is None:
        raise Conflict(f"job {job_id} is not started by this agent")
    return _evidence_record(job=job, claim=claim, host=host, evidence=evidence)


def _evidence_record(*, job: Job, claim: int, host: str, evidence: dict[str, Any]) -> bool:
    cleaned = evidence_clean(evidence)
    with transaction.atomic():
        # Under the job row's lock, the job's result remembers the claim whose evidence is recorded:
        # a second copy (a resend, or the same evidence in the report) records nothing.
        result = Job.objects.select_for_update().filter(pk=job.pk).values_list("result", flat=True).first() or {}
        if result.get("evidence_try") == claim:
            return False
        Job.objects.filter(pk=job.pk).update(result={**result, "evidence_try": claim})
        evidence_record(evidence=cleaned, spec=job_spec(job), policy=job.policy_name, stage="before_action", host=host)
    return True


def agent_job_heartbeat(*, host: str, job_id: int, claim: int) -> bool:
    """Renew the lease of a job this agent is acting on; False when it is no longer the agent's."""
    job = _owned(Job.objects.filter(pk=job_id).first(), host=host, what="heartbeat", job_id=job_id)
    agent_seen(host=host)
    renewed = Job.objects.filter(
        pk=job.pk, state=Job.State.RUNNING, lease_owner=agent_worker(host), attempts=claim
    ).update(lease_expires_at=timezone.now() + timedelta(seconds=settings.AUTOHEAL_LEASE_SECONDS))
    return renewed == 1


@dataclass(frozen=True)
class ReportResult:
    """What the central did with a report: applied, late, ignored; duplicate for a resend."""

    disposition: str
    duplicate: bool
    state: str


def agent_job_report(
    *,
    host: str,
    job_id: int,
    attempt: int,
    claim: int,
    ok: bool,
    transient: bool,
    detail: str,
    output: dict[str, Any],
    duration_seconds: float | None,
    evidence: dict[str, Any] | None = None,
) -> ReportResult:
    """Record an agent's outcome once per (job, attempt, claim) and apply it to the job once."""
    job = _owned(
        Job.objects.select_related("alert", "policy").filter(pk=job_id).first(), host=host, what="report", job_id=job_id
    )
    if job.attempt != attempt:
        raise Conflict(f"job {job_id} is attempt {job.attempt}, not {attempt}")
    worker = agent_worker(host)
    agent_seen(host=host)
    try:
        with transaction.atomic():
            current = Job.objects.select_for_update(of=("self",)).select_related("alert", "policy").get(pk=job_id)
            # A report before the start is a check that could not reach Docker (retried like the
            # worker's); after it, the action's outcome.
            mine = current.lease_owner == worker and current.attempts == claim
            if mine and current.state == Job.State.RUNNING:
                disposition = "applied"
            elif mine and current.state == Job.State.UNKNOWN:
                disposition = "late"
            else:
                disposition = "ignored"
            AgentReport.objects.create(
                job=current,
                host=host,
                attempt=attempt,
                claim=claim,
                ok=ok,
                detail=detail[:4000],
                payload={"transient": transient, "output": output, "duration_seconds": duration_seconds},
                disposition=disposition,
            )
            if evidence is not None and mine and current.started_at is not None:
                # Evidence the agent could not deliver before its action comes with the outcome.
                _evidence_record(job=current, claim=claim, host=host, evidence=evidence)
            if disposition != "ignored":
                probe = bool((current.result or {}).get("probe"))
                outcome = job_finish(
                    job=current,
                    result=ExecResult(ok=ok, transient=transient, detail=detail[:4000], output=output),
                    started=duration_seconds,
                    probe=probe,
                )
                return ReportResult(disposition=disposition, duplicate=False, state=outcome.state)
            return ReportResult(disposition=disposition, duplicate=False, state=current.state)
    except IntegrityError:
        first = AgentReport.objects.get(job_id=job_id, attempt=attempt, claim=claim)
        state = Job.objects.filter(pk=job_id).values_list("state", flat=True).first() or ""
        return ReportResult(disposition=first.disposition, duplicate=True, state=state)


def jobs_host_offline(*, now: datetime | None = None) -> int:
    """Jobs waiting for a host with no connected agent past AUTOHEAL_AGENT_JOB_TTL_SECONDS: skipped."""
    now = now or timezone.now()
    waited = now - timedelta(seconds=settings.AUTOHEAL_AGENT_JOB_TTL_SECONDS)
    connected_since = now - timedelta(seconds=settings.AUTOHEAL_AGENT_CONNECTED_SECONDS)
    online = set(Agent.objects.filter(last_seen__gte=connected_since).values_list("host", flat=True))
    stale = (
        Job.objects.filter(state=Job.State.QUEUED, not_before__lt=waited)
        .exclude(host__in=local_hosts())
        .exclude(host__in=online)
    )
    if not stale.exists():
        return 0
    done = 0
    limits = safety.limits_from_settings()
    with transaction.atomic():
        locked = stale.select_related("alert", "policy").order_by("id")
        if connection.vendor == "postgresql":
            locked = locked.select_for_update(skip_locked=True, of=("self",))
        for job in list(locked[:OFFLINE_BATCH]):
            seconds = settings.AUTOHEAL_AGENT_JOB_TTL_SECONDS
            job_settle(
                job=job,
                decision=Decision(
                    "skip",
                    HOST_OFFLINE,
                    f"no agent of host {job.host} took the job within {seconds}s (AUTOHEAL_AGENT_JOB_TTL_SECONDS)",
                ),
                limits=limits,
            )
            done += 1
    return done
