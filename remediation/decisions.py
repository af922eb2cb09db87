"""Pure decisions: given plain facts about a job and the world, what to do now and why.

No ORM and no clock here: the caller passes ``now`` and the facts it read, so the same function is
used by the worker (under its locks), by ``autoheal_simulate`` (touching nothing) and by property
tests with a fake clock.

The guards, in the order they are checked (the first that applies gives the reason):

1. the incident resolved -> skip ``resolved`` (a resolved alert never triggers an action);
2. an operator acked it -> skip ``acked``;
3. the kill switch (environment floor or runtime switch) is off -> skip ``disabled``;
4. a pause is running -> skip ``paused``;
5. for actions that change something (destructive): the circuit breaker -> skip ``circuit_open``
   (and trip it when this action would exceed its limits), the per-target hourly budget -> skip
   ``budget``, the policy cooldown for a new incident -> skip ``cooldown``, the exponential backoff
   between actions on one target -> delay;
6. dry-run from the environment, the runtime switch or the policy -> record what would happen;
7. otherwise run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Verdict = Literal["run", "dry_run", "skip", "delay"]

# A policy's limits when it does not say (and once it is deleted, for the jobs it left behind).
DEFAULT_COOLDOWN_SECONDS = 300
DEFAULT_MAX_ACTIONS_PER_HOUR = 3
DEFAULT_VERIFY_WITHIN_SECONDS = 300

BUDGET_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Limits:
    """The global safety limits (from settings)."""

    circuit_max_actions: int = 10
    circuit_max_failures: int = 5
    circuit_window_seconds: int = 600
    circuit_cooloff_seconds: int = 900
    backoff_base_seconds: int = 10
    backoff_max_seconds: int = 300
    backoff_reset_seconds: int = 600


@dataclass(frozen=True)
class SwitchFacts:
    """The kill switch layers, the pause and the circuit breaker as they stand."""

    env_enabled: bool = True
    runtime_enabled: bool = True
    env_dry_run: bool = False
    runtime_dry_run: bool = False
    paused_until: datetime | None = None
    circuit_open: bool = False
    circuit_half_open: bool = False


@dataclass(frozen=True)
class JobFacts:
    """The job, its policy's limits and its incident's state."""

    destructive: bool
    policy_dry_run: bool = False
    attempt: int = 1
    incident_resolved: bool = False
    incident_acked: bool = False
    cooldown_seconds: int = DEFAULT_COOLDOWN_SECONDS
    max_actions_per_hour: int = DEFAULT_MAX_ACTIONS_PER_HOUR


@dataclass(frozen=True)
class HistoryFacts:
    """What already happened: real (not dry-run) actions only.

    ``target_actions`` are the start times of actions on this job's target (any policy, any
    incident); ``circuit_actions`` and ``circuit_failures`` are the destructive actions and the
    failed or unknown ones that the breaker counts (inside its window, since it was last reset).
    """

    target_actions: Sequence[datetime] = ()
    circuit_actions: int = 0
    circuit_failures: int = 0


@dataclass(frozen=True)
class Decision:
    """What to do with the job now, and the reason an operator reads in the audit trail."""

    verdict: Verdict
    reason: str = ""
    message: str = ""
    until: datetime | None = None
    trip_circuit: bool = False
    probe: bool = False


def backoff_seconds(streak: int, limits: Limits) -> int:
    """Seconds to wait after the ``streak``-th consecutive action on a target: 10 s doubling, capped."""
    if streak <= 0:
        return 0
    # The exponent is bounded so a long streak cannot build a huge integer.
    return int(min(limits.backoff_max_seconds, limits.backoff_base_seconds * 2 ** min(streak - 1, 32)))


def backoff_streak(target_actions: Sequence[datetime], now: datetime, limits: Limits) -> int:
    """How many actions on the target form the current streak.

    The streak is reset when the target stayed healthy, i.e. no action was needed for
    ``backoff_reset_seconds``: both since the last action (until ``now``) and between actions.
    """
    reset = timedelta(seconds=limits.backoff_reset_seconds)
    times = sorted(t for t in target_actions if t <= now)
    if not times or now - times[-1] >= reset:
        return 0
    streak = 1
    for earlier, later in zip(reversed(times[:-1]), reversed(times[1:]), strict=True):
        if later - earlier >= reset:
            break
        streak += 1
    return streak


def actions_in_budget_window(target_actions: Sequence[datetime], now: datetime) -> int:
    """Actions on the target in the rolling hour that ends now."""
    start = now - BUDGET_WINDOW
    return sum(1 for t in target_actions if start < t <= now)


def job_decide(*, job: JobFacts, switch: SwitchFacts, history: HistoryFacts, limits: Limits, now: datetime) -> Decision:
    """Decide what the worker does with a job now (see the module docstring for the order)."""
    if job.incident_resolved:
        return Decision("skip", "resolved", "the alert is resolved: nothing to remediate")
    if job.incident_acked:
        return Decision("skip", "acked", "an operator acked the incident and took it over")
    if not switch.env_enabled:
        return Decision("skip", "disabled", "AUTOHEAL_ENABLED is off")
    if not switch.runtime_enabled:
        return Decision("skip", "disabled", "the runtime kill switch is off")
    if switch.paused_until is not None and switch.paused_until > now:
        return Decision("skip", "paused", f"paused until {switch.paused_until.isoformat()}")

    probe = False
    if job.destructive:
        circuit = _circuit_decide(switch=switch, history=history, limits=limits)
        if circuit is not None and circuit.verdict == "skip":
            return circuit
        probe = circuit is not None and circuit.probe
        limited = _target_limits_decide(job=job, history=history, limits=limits, now=now)
        if limited is not None:
            return limited

    dry_run = _dry_run_layer(job=job, switch=switch)
    if dry_run:
        return Decision("dry_run", "dry_run", f"dry-run ({dry_run}): nothing was done")
    return Decision("run", "", "probe action while the circuit is half-open" if probe else "", probe=probe)


def _circuit_decide(*, switch: SwitchFacts, history: HistoryFacts, limits: Limits) -> Decision | None:
    if switch.circuit_open and not switch.circuit_half_open:
        return Decision("skip", "circuit_open", "the circuit breaker is open")
    if switch.circuit_open and switch.circuit_half_open:
        if history.circuit_actions > 0:
            return Decision("skip", "circuit_open", "the circuit is half-open and its probe action was already taken")
        return Decision("run", probe=True)
    if history.circuit_actions >= limits.circuit_max_actions:
        return Decision(
            "skip",
            "circuit_open",
            f"{history.circuit_actions} actions in {limits.circuit_window_seconds}s reached the breaker's limit "
            f"of {limits.circuit_max_actions}",
            trip_circuit=True,
        )
    if history.circuit_failures >= limits.circuit_max_failures:
        return Decision(
            "skip",
            "circuit_open",
            f"{history.circuit_failures} failed actions in {limits.circuit_window_seconds}s reached the breaker's "
            f"limit of {limits.circuit_max_failures}",
            trip_circuit=True,
        )
    return None


def _target_limits_decide(*, job: JobFacts, history: HistoryFacts, limits: Limits, now: datetime) -> Decision | None:
    used = actions_in_budget_window(history.target_actions, now)
    if used >= job.max_actions_per_hour:
        return Decision(
            "skip", "budget", f"{used} actions on this target in the last hour (budget {job.max_actions_per_hour})"
        )
    past = sorted(t for t in history.target_actions if t <= now)
    if not past:
        return None
    last = past[-1]
    if job.attempt <= 1 and now - last < timedelta(seconds=job.cooldown_seconds):
        return Decision(
            "skip",
            "cooldown",
            f"the target was acted on {int((now - last).total_seconds())}s ago (cooldown {job.cooldown_seconds}s)",
        )
    wait = backoff_seconds(backoff_streak(past, now, limits), limits)
    until = last + timedelta(seconds=wait)
    if until > now:
        return Decision("delay", "backoff", f"backing off {wait}s after the last action on this target", until=until)
    return None


def _dry_run_layer(*, job: JobFacts, switch: SwitchFacts) -> str:
    if switch.env_dry_run:
        return "AUTOHEAL_DRY_RUN"
    if switch.runtime_dry_run:
        return "runtime switch"
    if job.policy_dry_run:
        return "policy"
    return ""


@dataclass(frozen=True)
class NextAttempt:
    """After an ineffective or failed action on a still-firing incident: try again, or escalate."""

    escalate: bool
    not_before: datetime | None = None
    message: str = ""


def next_attempt_decide(
    *, target_actions: Sequence[datetime], max_actions_per_hour: int, limits: Limits, now: datetime
) -> NextAttempt:
    """The next attempt waits for the backoff; once the hourly budget is spent, escalate instead."""
    used = actions_in_budget_window(target_actions, now)
    if used >= max_actions_per_hour:
        return NextAttempt(
            escalate=True,
            message=f"{used} actions in the last hour did not fix it (budget {max_actions_per_hour}): a person must look",
        )
    past = sorted(t for t in target_actions if t <= now)
    if not past:
        return NextAttempt(escalate=False, not_before=now, message="next attempt now")
    wait = backoff_seconds(backoff_streak(past, now, limits), limits)
    not_before = max(now, past[-1] + timedelta(seconds=wait))
    return NextAttempt(escalate=False, not_before=not_before, message=f"next attempt after a {wait}s backoff")
