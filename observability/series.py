"""What Autoheal measures: metric names, buckets, and the pure mapping from audit events to deltas.

Every counter, histogram and "latest timestamp" gauge is derived from audit events (plus the
webhook's answer codes), so the numbers agree with the audit trail by construction. Nothing here
touches the database or reads the clock: ``audit_deltas`` turns a batch of events into the
increments that ``observability.services.series_add`` applies in one statement.
"""

from __future__ import annotations

import collections
import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

SUM = "sum"
MAX = "max"


@dataclass(frozen=True)
class Delta:
    """One change to one stored series: add ``value`` (SUM) or keep the larger value (MAX)."""

    name: str
    labels: str
    value: float
    merge: str = SUM


@dataclass(frozen=True)
class Counter:
    """A stored counter and its label names."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Histogram:
    """A stored histogram: one row per bucket (not cumulative) and one for the sum."""

    name: str
    help: str
    buckets: tuple[float, ...]


@dataclass(frozen=True)
class Latest:
    """A stored gauge that only moves forward: the latest Unix time something happened."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


EVENTS = Counter("autoheal_event_total", "Audit events written, by kind.", ("kind",))
ACTIONS = Counter(
    "autoheal_actions_total",
    "Remediation outcomes by alert name; result is ok, fail, unknown, dry_run or skipped.",
    ("alertname", "result"),
)
FAILURES = Counter(
    "autoheal_action_failures_total", "Actions that failed (action_fail), by alert name.", ("alertname",)
)
VERIFICATIONS = Counter(
    "autoheal_verifications_total",
    "Checks after a successful action; result is verified (the alert resolved in time) or ineffective.",
    ("alertname", "result"),
)
ESCALATIONS = Counter(
    "autoheal_escalations_total",
    "Incidents handed to people after the action budget was spent without a fix.",
    ("alertname",),
)
FALSE_POSITIVE_MARKS = Counter(
    "autoheal_false_positive_marks_total",
    "Operator verdicts on actions; verdict is false_positive (not needed) or needed.",
    ("alertname", "verdict"),
)
WEBHOOK_REQUESTS = Counter("autoheal_webhook_requests_total", "Answers of POST /alert by HTTP status code.", ("code",))
COUNTERS = (EVENTS, ACTIONS, FAILURES, VERIFICATIONS, ESCALATIONS, FALSE_POSITIVE_MARKS, WEBHOOK_REQUESTS)

AUDIT_WRITE = Histogram(
    "autoheal_audit_write_seconds",
    "Time to chain one batch of audit events (chain lock, hash, insert, count), in seconds.",
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0),
)
ACTION_DURATION = Histogram(
    "autoheal_action_duration_seconds",
    "How long an action ran (action_ok and action_fail), in seconds.",
    (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
TIME_TO_REMEDIATE = Histogram(
    "autoheal_time_to_remediate_seconds",
    "From the alert's start to its verified resolution after an action, in seconds.",
    (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0),
)
HISTOGRAMS = (AUDIT_WRITE, ACTION_DURATION, TIME_TO_REMEDIATE)

LAST_EVENT = Latest("autoheal_last_event_timestamp", "Unix time of the newest audit event.")
LAST_ACTION = Latest(
    "autoheal_action_last_timestamp",
    "Unix time of the latest action outcome (ok, fail, unknown, dry_run) by alert name.",
    ("alertname",),
)
LAST_ACCEPTED = Latest(
    "autoheal_webhook_last_accepted_timestamp",
    "Unix time POST /alert last accepted a delivery (202); the heartbeat alert keeps it fresh.",
)
LATESTS = (LAST_EVENT, LAST_ACTION, LAST_ACCEPTED)

# Audit kind -> the result label of autoheal_actions_total. Started, queued and retried actions are
# steps on the way to one of these outcomes, so counting them too would count an action twice.
ACTION_RESULTS = {
    "action_ok": "ok",
    "action_fail": "fail",
    "action_unknown": "unknown",
    "action_dry_run": "dry_run",
    "action_skipped": "skipped",
}
VERIFY_RESULTS = {"action_verified": "verified", "action_ineffective": "ineffective"}
# Outcomes that stand for an action attempt (a skipped one did nothing, so it is not "an action").
ATTEMPT_KINDS = frozenset({"action_ok", "action_fail", "action_unknown", "action_dry_run"})
# Every kind that moves a series of its own in ``_event_deltas`` (the others only move the two
# series every event moves).
_KIND_SERIES = frozenset(
    {*ACTION_RESULTS, *ATTEMPT_KINDS, *VERIFY_RESULTS, "incident_escalated", "false_positive_marked"}
)


class EventLike(Protocol):
    """The fields of an audit event the metrics read (``audit.models.AuditEvent`` has them)."""

    kind: str
    alertname: str
    ts: datetime
    data: Any


def labels_key(labels: Mapping[str, str] | None = None) -> str:
    """The canonical stored form of a label set: compact JSON with sorted keys."""
    items = tuple(sorted((labels or {}).items()))
    try:
        return _labels_key(items)
    except TypeError:  # a value that cannot be a cache key: encoded as it is
        return json.dumps(dict(items), separators=(",", ":"), ensure_ascii=False)


@functools.lru_cache(maxsize=4096)
def _labels_key(items: tuple[tuple[str, str], ...]) -> str:
    # Every sealed event asks for a few keys, nearly always the same ones (its kind, its
    # alertname): encoded once per process, not once per event.
    return json.dumps(dict(items), separators=(",", ":"), ensure_ascii=False)


def labels_from_key(key: str) -> dict[str, str]:
    """The label set back from its stored form."""
    value = json.loads(key or "{}")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def bucket_label(bound: float) -> str:
    """The ``le`` label Prometheus clients write for a bucket bound (``0.5``, ``1.0``, ``+Inf``)."""
    if math.isinf(bound):
        return "+Inf"
    return repr(float(bound))


def histogram_deltas(histogram: Histogram, value: float) -> list[Delta]:
    """One observation: +1 in the first bucket that holds it, and ``value`` added to the sum."""
    if math.isnan(value) or value < 0:
        return []
    bound = next((b for b in histogram.buckets if value <= b), math.inf)
    return [
        Delta(f"{histogram.name}_bucket", labels_key({"le": bucket_label(bound)}), 1.0),
        Delta(f"{histogram.name}_sum", labels_key(), float(value)),
    ]


def _number(data: Any, key: str) -> float | None:
    """A finite non-negative number from event data, or None (bad data is not measured)."""
    if not isinstance(data, Mapping):
        return None
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _event_deltas(event: EventLike) -> Iterable[Delta]:
    """What one event changes beyond the two series every event moves (counted per batch in
    ``audit_deltas``: a batch of thousands of alert events is a handful of deltas)."""
    kind = event.kind
    if kind not in _KIND_SERIES:
        return
    alertname = event.alertname or ""
    data = event.data if isinstance(event.data, Mapping) else {}
    if kind in ACTION_RESULTS:
        yield Delta(ACTIONS.name, labels_key({"alertname": alertname, "result": ACTION_RESULTS[kind]}), 1.0)
    if kind in ATTEMPT_KINDS:
        yield Delta(LAST_ACTION.name, labels_key({"alertname": alertname}), event.ts.timestamp(), MAX)
    if kind == "action_fail":
        yield Delta(FAILURES.name, labels_key({"alertname": alertname}), 1.0)
    if kind in ("action_ok", "action_fail") and (seconds := _number(data, "duration_seconds")) is not None:
        yield from histogram_deltas(ACTION_DURATION, seconds)
    if kind in VERIFY_RESULTS:
        yield Delta(VERIFICATIONS.name, labels_key({"alertname": alertname, "result": VERIFY_RESULTS[kind]}), 1.0)
    if kind == "action_verified" and (seconds := _number(data, "time_to_remediate_seconds")) is not None:
        yield from histogram_deltas(TIME_TO_REMEDIATE, seconds)
    # The engine may record an escalation as its own kind or as an ineffective action flagged
    # "escalated"; an event is one or the other, never both, so each escalation counts once.
    if kind == "incident_escalated" or (kind == "action_ineffective" and data.get("escalated") is True):
        yield Delta(ESCALATIONS.name, labels_key({"alertname": alertname}), 1.0)
    if kind == "false_positive_marked" and isinstance(data.get("false_positive"), bool):
        verdict = "false_positive" if data["false_positive"] else "needed"
        yield Delta(FALSE_POSITIVE_MARKS.name, labels_key({"alertname": alertname, "verdict": verdict}), 1.0)


def merge_deltas(deltas: Iterable[Delta]) -> list[Delta]:
    """Group by series: sums add up, maxima keep the largest; sorted so writers lock rows in order."""
    merged: dict[tuple[str, str], Delta] = {}
    for delta in deltas:
        key = (delta.name, delta.labels)
        seen = merged.get(key)
        if seen is None:
            merged[key] = delta
        elif delta.merge == MAX:
            merged[key] = Delta(delta.name, delta.labels, max(seen.value, delta.value), MAX)
        else:
            merged[key] = Delta(delta.name, delta.labels, seen.value + delta.value, SUM)
    return [merged[key] for key in sorted(merged)]


def audit_deltas(events: Sequence[EventLike], elapsed: float | None) -> list[Delta]:
    """Everything one audit batch changes: per-event counters plus one write-latency observation."""
    deltas = [
        Delta(EVENTS.name, labels_key({"kind": kind}), float(n))
        for kind, n in collections.Counter(e.kind for e in events).items()
    ]
    if events:
        deltas.append(Delta(LAST_EVENT.name, labels_key(), max(event.ts for event in events).timestamp(), MAX))
    for event in events:
        deltas.extend(_event_deltas(event))
    if events and elapsed is not None:
        deltas.extend(histogram_deltas(AUDIT_WRITE, elapsed))
    return merge_deltas(deltas)


def webhook_deltas(codes: Mapping[int, int], last_accepted: float | None = None) -> list[Delta]:
    """Counts of webhook answers by status code, and when a delivery was last accepted."""
    deltas = [Delta(WEBHOOK_REQUESTS.name, labels_key({"code": str(code)}), float(n)) for code, n in codes.items()]
    if last_accepted is not None:
        deltas.append(Delta(LAST_ACCEPTED.name, labels_key(), last_accepted, MAX))
    return merge_deltas(deltas)
