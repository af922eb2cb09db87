"""The pure decision function: guards, budget, backoff, circuit breaker and pause, with a fake clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from remediation.decisions import (
    HistoryFacts,
    JobFacts,
    Limits,
    SwitchFacts,
    backoff_seconds,
    backoff_streak,
    job_decide,
    next_attempt_decide,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LIMITS = Limits()


def decide(**overrides):
    job = overrides.pop("job", JobFacts(destructive=True))
    switch = overrides.pop("switch", SwitchFacts())
    history = overrides.pop("history", HistoryFacts())
    return job_decide(job=job, switch=switch, history=history, limits=overrides.pop("limits", LIMITS), now=T0)


def test_a_resolved_incident_is_never_acted_on_even_with_everything_else_allowing_it():
    decision = decide(job=JobFacts(destructive=True, incident_resolved=True))
    assert (decision.verdict, decision.reason) == ("skip", "resolved")


def test_skip_reasons_follow_the_documented_order():
    assert decide(job=JobFacts(destructive=True, incident_acked=True)).reason == "acked"
    assert decide(switch=SwitchFacts(env_enabled=False)).reason == "disabled"
    assert decide(switch=SwitchFacts(runtime_enabled=False)).reason == "disabled"
    paused = decide(switch=SwitchFacts(paused_until=T0 + timedelta(minutes=5)))
    assert paused.reason == "paused"
    assert decide(switch=SwitchFacts(paused_until=T0 - timedelta(seconds=1))).verdict == "run"
    assert decide(switch=SwitchFacts(circuit_open=True)).reason == "circuit_open"


def test_dry_run_from_any_layer_records_instead_of_acting():
    assert decide(switch=SwitchFacts(env_dry_run=True)).verdict == "dry_run"
    assert decide(switch=SwitchFacts(runtime_dry_run=True)).verdict == "dry_run"
    assert decide(job=JobFacts(destructive=True, policy_dry_run=True)).verdict == "dry_run"
    assert "AUTOHEAL_DRY_RUN" in decide(switch=SwitchFacts(env_dry_run=True)).message


def test_cooldown_skips_a_new_incident_but_a_reattempt_waits_for_the_backoff_instead():
    history = HistoryFacts(target_actions=[T0 - timedelta(seconds=5)])
    assert decide(job=JobFacts(destructive=True, cooldown_seconds=60), history=history).reason == "cooldown"
    reattempt = decide(job=JobFacts(destructive=True, attempt=2, cooldown_seconds=60), history=history)
    assert reattempt.verdict == "delay"
    assert reattempt.until == T0 + timedelta(seconds=5)


def test_budget_counts_actions_on_the_target_in_the_last_hour():
    job = JobFacts(destructive=True, attempt=2, max_actions_per_hour=2, cooldown_seconds=0)
    recent = HistoryFacts(target_actions=[T0 - timedelta(minutes=50), T0 - timedelta(minutes=20)])
    assert decide(job=job, history=recent).reason == "budget"
    older = HistoryFacts(target_actions=[T0 - timedelta(minutes=70), T0 - timedelta(minutes=20)])
    assert decide(job=job, history=older).verdict == "run"


def test_log_only_is_not_limited_by_breaker_or_budget():
    job = JobFacts(destructive=False, max_actions_per_hour=0)
    assert decide(job=job, switch=SwitchFacts(circuit_open=True)).verdict == "run"


def test_breaker_trips_when_the_window_holds_its_limit_of_actions_or_failures():
    tripped = decide(history=HistoryFacts(circuit_actions=LIMITS.circuit_max_actions))
    assert (tripped.reason, tripped.trip_circuit) == ("circuit_open", True)
    assert decide(history=HistoryFacts(circuit_failures=LIMITS.circuit_max_failures)).trip_circuit
    assert decide(history=HistoryFacts(circuit_actions=LIMITS.circuit_max_actions - 1)).verdict == "run"


def test_half_open_circuit_lets_exactly_one_probe_through():
    half = SwitchFacts(circuit_open=True, circuit_half_open=True)
    first = decide(switch=half, history=HistoryFacts(circuit_actions=0))
    assert first.verdict == "run" and first.probe
    assert decide(switch=half, history=HistoryFacts(circuit_actions=1)).reason == "circuit_open"


def test_backoff_is_ten_seconds_doubling_capped_at_five_minutes():
    assert [backoff_seconds(n, LIMITS) for n in range(0, 9)] == [0, 10, 20, 40, 80, 160, 300, 300, 300]


def test_backoff_streak_resets_once_the_target_stayed_healthy():
    close = [T0 - timedelta(seconds=s) for s in (100, 60, 30)]
    assert backoff_streak(close, T0, LIMITS) == 3
    assert backoff_streak(close, T0 + timedelta(seconds=LIMITS.backoff_reset_seconds), LIMITS) == 0
    split = [T0 - timedelta(seconds=2000), T0 - timedelta(seconds=30)]
    assert backoff_streak(split, T0, LIMITS) == 1


def test_next_attempt_escalates_once_the_budget_is_spent():
    spent = [T0 - timedelta(minutes=m) for m in (30, 20, 10)]
    assert next_attempt_decide(target_actions=spent, max_actions_per_hour=3, limits=LIMITS, now=T0).escalate
    streak = [T0 - timedelta(seconds=s) for s in (40, 5)]
    plan = next_attempt_decide(target_actions=streak, max_actions_per_hour=3, limits=LIMITS, now=T0)
    assert not plan.escalate
    assert plan.not_before == T0 - timedelta(seconds=5) + timedelta(seconds=20)


# --- property tests over sequences of alerts, with a fake clock ------------------------------

events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=400),  # seconds since the previous event
        st.sampled_from(["web", "db", "cache"]),  # target
        st.booleans(),  # a re-attempt of the same incident (attempt > 1) or a new incident
        st.booleans(),  # the action fails
    ),
    min_size=1,
    max_size=80,
)
limit_sets = st.builds(
    Limits,
    circuit_max_actions=st.integers(min_value=1, max_value=12),
    circuit_max_failures=st.integers(min_value=1, max_value=6),
    circuit_window_seconds=st.integers(min_value=60, max_value=3600),
    backoff_base_seconds=st.integers(min_value=1, max_value=30),
    backoff_max_seconds=st.integers(min_value=30, max_value=300),
    backoff_reset_seconds=st.integers(min_value=300, max_value=900),
)


def simulate(sequence, limits, *, budget, cooldown, pause=None):
    """Drive job_decide like the worker does; the breaker trips and stays open (no operator)."""
    now = T0
    actions: dict[str, list[datetime]] = {}
    all_actions: list[datetime] = []
    failures: list[datetime] = []
    circuit_open = False
    for gap, target, reattempt, fails in sequence:
        now += timedelta(seconds=gap)
        window_start = now - timedelta(seconds=limits.circuit_window_seconds)
        history = HistoryFacts(
            target_actions=tuple(actions.get(target, [])),
            circuit_actions=sum(1 for t in all_actions if t >= window_start),
            circuit_failures=sum(1 for t in failures if t >= window_start),
        )
        paused_until = pause[1] if pause and pause[0] <= now < pause[1] else None
        decision = job_decide(
            job=JobFacts(
                destructive=True, attempt=2 if reattempt else 1, cooldown_seconds=cooldown, max_actions_per_hour=budget
            ),
            switch=SwitchFacts(circuit_open=circuit_open, paused_until=paused_until),
            history=history,
            limits=limits,
            now=now,
        )
        if decision.trip_circuit:
            circuit_open = True
        if decision.verdict == "run":
            actions.setdefault(target, []).append(now)
            all_actions.append(now)
            if fails:
                failures.append(now)
    return actions, all_actions, failures


@settings(max_examples=200, deadline=None)
@given(sequence=events, limits=limit_sets, budget=st.integers(min_value=0, max_value=5), cooldown=st.integers(0, 600))
def test_budget_is_never_exceeded_in_any_rolling_hour(sequence, limits, budget, cooldown):
    actions, _, _ = simulate(sequence, limits, budget=budget, cooldown=cooldown)
    for times in actions.values():
        for t in times:
            assert sum(1 for u in times if t - timedelta(hours=1) < u <= t) <= budget


@settings(max_examples=200, deadline=None)
@given(sequence=events, limits=limit_sets, budget=st.integers(min_value=1, max_value=50))
def test_consecutive_actions_on_a_target_respect_the_exponential_backoff(sequence, limits, budget):
    actions, _, _ = simulate(sequence, limits, budget=budget, cooldown=0)
    reset = timedelta(seconds=limits.backoff_reset_seconds)
    for times in actions.values():
        run = 0  # actions so far in the current streak, before `later`
        for earlier, later in itertools.pairwise(times):
            if later - earlier >= reset:
                run = 0  # the target stayed healthy long enough: the streak starts again
                continue
            run = run + 1 if run else 1
            needed = min(limits.backoff_max_seconds, limits.backoff_base_seconds * 2 ** (run - 1))
            assert (later - earlier).total_seconds() >= needed


@settings(max_examples=200, deadline=None)
@given(sequence=events, limits=limit_sets)
def test_the_circuit_breaker_is_never_exceeded(sequence, limits):
    _, all_actions, failures = simulate(sequence, limits, budget=1000, cooldown=0)
    window = timedelta(seconds=limits.circuit_window_seconds)
    for t in all_actions:
        in_window = sum(1 for u in all_actions if t - window <= u <= t)
        assert in_window <= limits.circuit_max_actions
        # No action starts once the failures in the window reached the limit.
        assert sum(1 for u in failures if t - window <= u < t) < limits.circuit_max_failures


@settings(max_examples=150, deadline=None)
@given(
    sequence=events,
    limits=limit_sets,
    start=st.integers(min_value=0, max_value=5000),
    length=st.integers(min_value=1, max_value=5000),
)
def test_nothing_runs_during_a_pause(sequence, limits, start, length):
    pause = (T0 + timedelta(seconds=start), T0 + timedelta(seconds=start + length))
    _, all_actions, _ = simulate(sequence, limits, budget=1000, cooldown=0, pause=pause)
    assert not [t for t in all_actions if pause[0] <= t < pause[1]]


@given(
    target_actions=st.lists(st.integers(min_value=0, max_value=7200), max_size=10),
    budget=st.integers(min_value=0, max_value=6),
)
def test_a_planned_reattempt_never_comes_before_its_backoff_or_beyond_the_budget(target_actions, budget):
    now = T0 + timedelta(hours=2)
    times = [T0 + timedelta(seconds=s) for s in target_actions]
    plan = next_attempt_decide(target_actions=times, max_actions_per_hour=budget, limits=LIMITS, now=now)
    used = sum(1 for t in times if now - timedelta(hours=1) < t <= now)
    assert plan.escalate == (used >= budget)
    if not plan.escalate:
        assert plan.not_before is not None and plan.not_before >= now
        if times:
            wait = backoff_seconds(backoff_streak(times, now, LIMITS), LIMITS)
            assert plan.not_before >= max(times) + timedelta(seconds=wait)
