"""Reads for the Command Center: each a fixed number of queries, whatever the amount of data."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import TruncDay
from django.utils import timezone

from remediation.models import DESTRUCTIVE_ACTIONS, Alert, Job, Policy

# The seed's success criteria, over the last 30 days.
METRICS_WINDOW = timedelta(days=30)
TARGET_SUCCESS_RATE = 0.95
TARGET_MTTR_SECONDS = 120.0
TARGET_FALSE_POSITIVE_RATE = 0.05
# Page sizes: the page shows the newest of each list, so its cost does not grow with the tables.
OPEN_INCIDENTS_SHOWN = 50
JOBS_PER_INCIDENT_SHOWN = 10
RECENT_ACTIONS_SHOWN = 25
COOLDOWN_JOBS_READ = 500
CHART_DAYS = 30

# Jobs that really acted on something: what success and false-positive rates are measured on.
ACTED_STATES = (Job.State.OK, Job.State.FAIL, Job.State.UNKNOWN)


@dataclass(frozen=True)
class Cooldown:
    """A target whose cooldown still runs after a real destructive action."""

    target: str
    alertname: str
    policy: str
    last_action_at: datetime
    until: datetime
    remaining_seconds: int


@dataclass(frozen=True)
class SuccessMetric:
    """One of the seed's success metrics over 30 days, against its target."""

    key: str
    label: str
    value: float | None
    shown: str
    target: str
    met: bool | None  # None: no data yet
    detail: str


@dataclass(frozen=True)
class OpsOverview:
    """Everything the Command Center shows besides the switch and the live stream."""

    incidents: list[Alert]
    cooldowns: list[Cooldown]
    recent: list[Job]
    metrics: list[SuccessMetric]
    chart: dict[str, Any] = field(default_factory=dict)


def open_incidents() -> list[Alert]:
    """Firing incidents, newest first, each with its newest jobs (two queries)."""
    jobs = Job.objects.order_by("-id").only(
        "id", "alert_id", "policy_name", "action", "target", "state", "attempt", "dry_run", "skip_reason"
    )
    incidents = (
        Alert.objects.filter(status=Alert.Status.FIRING)
        .order_by("-received_at", "-id")
        .prefetch_related(Prefetch("jobs", queryset=jobs, to_attr="recent_jobs"))[:OPEN_INCIDENTS_SHOWN]
    )
    result: list[Alert] = list(incidents)
    for incident in result:
        incident.recent_jobs = incident.recent_jobs[:JOBS_PER_INCIDENT_SHOWN]  # type: ignore[attr-defined]
    return result


def targets_in_cooldown(*, now: datetime) -> list[Cooldown]:
    """Targets whose policy cooldown still runs, longest remaining first (two queries).

    The same actions the engine's cooldown counts: destructive, not dry-run, really started.
    """
    longest = Policy.objects.aggregate(longest=Max("cooldown_seconds"))["longest"] or 0
    if not longest:
        return []
    recent = (
        Job.objects.filter(
            started_at__gte=now - timedelta(seconds=longest),
            state__in=[Job.State.RUNNING, *ACTED_STATES],
            action__in=DESTRUCTIVE_ACTIONS,
            dry_run=False,
            policy__isnull=False,
        )
        .order_by("-started_at")
        .values_list("target", "alert__alertname", "policy__name", "started_at", "policy__cooldown_seconds")[
            :COOLDOWN_JOBS_READ
        ]
    )
    by_target: dict[str, Cooldown] = {}
    for target, alertname, policy, started_at, cooldown in recent:
        if started_at is None:
            continue
        until = started_at + timedelta(seconds=cooldown or 0)
        left = int((until - now).total_seconds())
        if left <= 0:
            continue
        known = by_target.get(target)
        if known is None or until > known.until:
            by_target[target] = Cooldown(target, alertname, policy, started_at, until, left)
    return sorted(by_target.values(), key=lambda c: (-c.remaining_seconds, c.target))


def recent_actions() -> list[Job]:
    """The newest jobs that left the queue, with their incident (one query); waiting ones have their panel."""
    return list(
        Job.objects.exclude(state__in=(Job.State.QUEUED, Job.State.AWAITING_APPROVAL))
        .select_related("alert")
        .order_by("-id")[:RECENT_ACTIONS_SHOWN]
    )


def _acted(now: datetime, since: timedelta) -> QuerySet[Job]:
    return Job.objects.filter(finished_at__gte=now - since, finished_at__lte=now, state__in=ACTED_STATES, dry_run=False)


def _remediation_time() -> ExpressionWrapper:
    # Alert start (Alertmanager's startsAt) to the action's success: the seed's "time to remediate".
    return ExpressionWrapper(F("finished_at") - F("alert__starts_at"), output_field=DurationField())


def daily_actions(*, now: datetime, days: int = CHART_DAYS) -> list[dict[str, Any]]:
    """Per UTC day: actions by result and the summed time to remediate of the successful ones (one query)."""
    rows = (
        _acted(now, timedelta(days=days))
        .annotate(day=TruncDay("finished_at"))
        .values("day")
        .annotate(
            ok=Count("id", filter=Q(state=Job.State.OK)),
            fail=Count("id", filter=Q(state=Job.State.FAIL)),
            unknown=Count("id", filter=Q(state=Job.State.UNKNOWN)),
            # Not named after the field: an annotation called false_positive would shadow it.
            judged_false=Count("id", filter=Q(false_positive=True)),
            marked=Count("id", filter=Q(false_positive__isnull=False)),
            ttr=Sum(_remediation_time(), filter=Q(state=Job.State.OK)),
        )
        .order_by("day")
    )
    return list(rows)


def chart_data(days: list[dict[str, Any]], *, now: datetime, span: int = CHART_DAYS) -> dict[str, Any]:
    """The charts' series, one point per day (days without actions included), JSON-ready. Pure."""
    by_day = {row["day"].date(): row for row in days}
    start = now.date() - timedelta(days=span - 1)
    labels, ok, fail, unknown, rate, mttr = [], [], [], [], [], []
    for offset in range(span):
        day = start + timedelta(days=offset)
        row = by_day.get(day, {})
        n_ok, n_fail, n_unknown = row.get("ok", 0), row.get("fail", 0), row.get("unknown", 0)
        total = n_ok + n_fail + n_unknown
        labels.append(day.isoformat())
        ok.append(n_ok)
        fail.append(n_fail)
        unknown.append(n_unknown)
        rate.append(round(100 * n_ok / total, 1) if total else None)
        ttr = row.get("ttr")
        mttr.append(round(ttr.total_seconds() / n_ok, 1) if ttr is not None and n_ok else None)
    return {
        "labels": labels,
        "ok": ok,
        "fail": fail,
        "unknown": unknown,
        "success_rate": rate,
        "mttr_seconds": mttr,
        "targets": {"success_rate": 100 * TARGET_SUCCESS_RATE, "mttr_seconds": TARGET_MTTR_SECONDS},
    }


def window_totals(days: list[dict[str, Any]]) -> dict[str, Any]:
    """The window's totals from the per-day rows of ``daily_actions`` (exact: sums of counts). Pure.

    One scan of the jobs serves both the charts and the metrics: on 100,000 jobs a second
    aggregate over the same rows would double the page's cost.
    """
    ttr = [row["ttr"] for row in days if row.get("ttr") is not None]
    return {
        "total": sum(row["ok"] + row["fail"] + row["unknown"] for row in days),
        "ok": sum(row["ok"] for row in days),
        "marked": sum(row["marked"] for row in days),
        "false_positive": sum(row["judged_false"] for row in days),
        "ttr": sum(ttr, timedelta()) if ttr else None,
    }


def success_metrics_from(totals: dict[str, Any]) -> list[SuccessMetric]:
    """The metrics from the window's counts. Pure, so the thresholds are testable on their own."""
    total, ok = totals["total"] or 0, totals["ok"] or 0
    false_positive, marked = totals["false_positive"] or 0, totals["marked"] or 0
    ttr: timedelta | None = totals["ttr"]
    rate = ok / total if total else None
    mttr = ttr.total_seconds() / ok if ttr is not None and ok else None
    fp_rate = false_positive / total if total else None
    return [
        SuccessMetric(
            key="success_rate",
            label="Action success rate",
            value=rate,
            shown="no actions yet" if rate is None else f"{100 * rate:.1f}%",
            target=f"> {100 * TARGET_SUCCESS_RATE:.0f}%",
            met=None if rate is None else rate > TARGET_SUCCESS_RATE,
            detail=f"{ok} of {total} actions succeeded",
        ),
        SuccessMetric(
            key="mttr",
            label="Mean time to remediation",
            value=mttr,
            shown="no successful actions yet" if mttr is None else _duration(mttr),
            target=f"< {_duration(TARGET_MTTR_SECONDS)}",
            met=None if mttr is None else mttr < TARGET_MTTR_SECONDS,
            detail="alert start to action_ok",
        ),
        SuccessMetric(
            key="false_positive_rate",
            label="False-positive rate",
            value=fp_rate,
            shown="no actions yet" if fp_rate is None else f"{100 * fp_rate:.1f}%",
            target=f"< {100 * TARGET_FALSE_POSITIVE_RATE:.0f}%",
            met=None if fp_rate is None else fp_rate < TARGET_FALSE_POSITIVE_RATE,
            detail=f"{false_positive} marked false positive; {marked} of {total} actions reviewed",
        ),
    ]


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def ops_overview(*, now: datetime | None = None) -> OpsOverview:
    """The Command Center's data: seven queries, whatever the size of the tables."""
    now = now or timezone.now()
    days = daily_actions(now=now, days=METRICS_WINDOW.days)
    return OpsOverview(
        incidents=open_incidents(),
        cooldowns=targets_in_cooldown(now=now),
        recent=recent_actions(),
        metrics=success_metrics_from(window_totals(days)),
        chart=chart_data(days, now=now),
    )
