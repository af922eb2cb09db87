"""The ``/metrics`` side: a prometheus_client collector that reads the database at scrape time.

Counters, histograms and "latest" gauges come from the stored series (written with the audit
events); the state gauges (switch, queue, circuit, cooldowns, false-positive ratio) are read from
the engine's tables. Every process answers with the same numbers, whichever did the work.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db import Error
from django.db.models import Count, Max, Min, Q
from django.utils import timezone
from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from observability import services
from observability.models import MetricSeries
from observability.series import COUNTERS, EVENTS, HISTOGRAMS, LATESTS, Histogram, bucket_label, labels_from_key
from remediation.models import DESTRUCTIVE_ACTIONS, Job, Policy, Switch
from remediation.selectors import switch_effective

logger = logging.getLogger(__name__)

FALSE_POSITIVE_WINDOW = timedelta(days=30)

# name -> (help, label names) of the gauges computed from the engine's tables at scrape time.
STATE_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "autoheal_enabled": ("1 when remediation is on (runtime switch, pause and AUTOHEAL_ENABLED floor).", ()),
    "autoheal_dry_run": ("1 when actions are only recorded (runtime switch or AUTOHEAL_DRY_RUN floor).", ()),
    "autoheal_paused": ("1 while an operator pause is in force.", ()),
    "autoheal_circuit_open": ("1 while the circuit breaker stops destructive actions.", ()),
    "autoheal_queue_depth": ("Jobs waiting to run.", ()),
    "autoheal_queue_oldest_age_seconds": (
        "Seconds the oldest due job has waited for a worker (0 when none is due).",
        (),
    ),
    "autoheal_cooldown_remaining_seconds": (
        "Seconds until an alert's policy may act again after its latest action.",
        ("alertname",),
    ),
    "autoheal_false_positive_ratio_30d": (
        "Share of actions run in the last 30 days that operators marked as not needed.",
        (),
    ),
    "autoheal_database_up": ("1 when this scrape could read Autoheal's database.", ()),
}


def metric_names() -> set[str]:
    """Every series name this collector can expose (histograms with their suffixes)."""
    names = {c.name for c in COUNTERS} | {g.name for g in LATESTS} | set(STATE_GAUGES)
    for histogram in HISTOGRAMS:
        names |= {histogram.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


class AutohealCollector(Collector):
    """Reads Autoheal's metrics from the database on every scrape."""

    def describe(self) -> Iterator[Metric]:
        # Declaring the families lets the registry check names without a database query at start.
        for counter in COUNTERS:
            yield CounterMetricFamily(counter.name, counter.help, labels=counter.labels)
        for histogram in HISTOGRAMS:
            yield HistogramMetricFamily(histogram.name, histogram.help, labels=())
        for latest in LATESTS:
            yield GaugeMetricFamily(latest.name, latest.help, labels=latest.labels)
        for name, (help_text, labels) in STATE_GAUGES.items():
            yield GaugeMetricFamily(name, help_text, labels=labels)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("autoheal_database_up", STATE_GAUGES["autoheal_database_up"][0])
        try:
            if services.pending_webhook_counts.pending():
                services.pending_webhook_counts.flush()
            stored = list(MetricSeries.objects.values_list("name", "labels", "value"))
            state = list(_state_families(timezone.now()))
        except Error:
            logger.exception("metrics: database unavailable")
            up.add_metric([], 0.0)
            yield up
            return
        yield from _stored_families(stored)
        yield from state
        up.add_metric([], 1.0)
        yield up


def _stored_families(rows: list[tuple[str, str, float]]) -> Iterator[Metric]:
    by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for name, key, value in rows:
        by_name[name].append((labels_from_key(key), value))

    for counter in COUNTERS:
        family = CounterMetricFamily(counter.name, counter.help, labels=counter.labels)
        seen: set[tuple[str, ...]] = set()
        for labels, value in sorted(by_name.get(counter.name, []), key=lambda r: sorted(r[0].items())):
            values = tuple(labels.get(label, "") for label in counter.labels)
            seen.add(values)
            family.add_metric(list(values), value)
        if counter is EVENTS:
            # Every kind is present from the start, so "no events in 15 minutes" can be computed
            # before the first event of a kind was ever written.
            from audit.models import ALL_KINDS

            for kind in ALL_KINDS:
                if (kind,) not in seen:
                    family.add_metric([kind], 0.0)
        yield family

    for histogram in HISTOGRAMS:
        yield _histogram_family(histogram, by_name)

    for latest in LATESTS:
        gauge = GaugeMetricFamily(latest.name, latest.help, labels=latest.labels)
        for labels, value in sorted(by_name.get(latest.name, []), key=lambda r: sorted(r[0].items())):
            gauge.add_metric([labels.get(label, "") for label in latest.labels], value)
        yield gauge


def _histogram_family(histogram: Histogram, by_name: dict[str, list[tuple[dict[str, str], float]]]) -> Metric:
    per_bound: dict[float, float] = defaultdict(float)
    for labels, value in by_name.get(f"{histogram.name}_bucket", []):
        try:
            per_bound[float(labels.get("le", "+Inf"))] += value
        except ValueError:
            per_bound[math.inf] += value
    total_sum = sum(value for _, value in by_name.get(f"{histogram.name}_sum", []))
    buckets: list[tuple[str, float]] = []
    for bound in (*histogram.buckets, math.inf):
        # Stored buckets are per bound (not cumulative); a bound no longer defined counts in the
        # next defined one, so changing the bucket list never loses observations.
        cumulative = sum(count for stored, count in per_bound.items() if stored <= bound)
        buckets.append((bucket_label(bound), cumulative))
    family = HistogramMetricFamily(histogram.name, histogram.help, labels=())
    family.add_metric([], buckets, sum_value=total_sum)
    return family


def _state_families(now: datetime) -> Iterator[Metric]:
    def gauge(name: str, value: float) -> Metric:
        family = GaugeMetricFamily(name, STATE_GAUGES[name][0])
        family.add_metric([], value)
        return family

    # Read the switch without creating it: a scrape must not write. No row means the defaults.
    row = Switch.objects.current_or_default()
    switch = switch_effective(now=now, row=row)
    yield gauge("autoheal_enabled", float(switch.enabled))
    yield gauge("autoheal_dry_run", float(switch.dry_run))
    yield gauge("autoheal_paused", float(switch.paused))
    yield gauge("autoheal_circuit_open", float(switch.circuit_open))

    queue = Job.objects.filter(state=Job.State.QUEUED).aggregate(
        depth=Count("id"), oldest_due=Min("not_before", filter=Q(not_before__lte=now))
    )
    yield gauge("autoheal_queue_depth", float(queue["depth"] or 0))
    oldest_due = queue["oldest_due"]
    yield gauge(
        "autoheal_queue_oldest_age_seconds", max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0.0
    )

    yield _cooldown_family(now)

    acted = Job.objects.filter(
        finished_at__gte=now - FALSE_POSITIVE_WINDOW,
        state__in=[Job.State.OK, Job.State.FAIL, Job.State.UNKNOWN],
        dry_run=False,
    ).aggregate(total=Count("id"), marked=Count("id", filter=Q(false_positive=True)))
    total = acted["total"] or 0
    yield gauge("autoheal_false_positive_ratio_30d", (acted["marked"] or 0) / total if total else 0.0)


def _cooldown_family(now: datetime) -> Metric:
    """Per alert name, the longest cooldown still running after an action that really ran."""
    name = "autoheal_cooldown_remaining_seconds"
    family = GaugeMetricFamily(name, STATE_GAUGES[name][0], labels=["alertname"])
    longest = Policy.objects.aggregate(longest=Max("cooldown_seconds"))["longest"] or 0
    if not longest:
        return family
    # The same actions the engine's cooldown counts: destructive ones that really started.
    recent = Job.objects.filter(
        started_at__gte=now - timedelta(seconds=longest),
        state__in=[Job.State.RUNNING, Job.State.OK, Job.State.FAIL, Job.State.UNKNOWN],
        action__in=DESTRUCTIVE_ACTIONS,
        dry_run=False,
        policy__isnull=False,
    ).values_list("alert__alertname", "started_at", "policy__cooldown_seconds")
    remaining: dict[str, float] = {}
    for alertname, started_at, cooldown in recent:
        if started_at is None:
            continue
        left = (started_at + timedelta(seconds=cooldown or 0) - now).total_seconds()
        remaining[alertname] = max(remaining.get(alertname, 0.0), left, 0.0)
    for alertname in sorted(remaining):
        family.add_metric([alertname], remaining[alertname])
    return family


_collector: AutohealCollector | None = None


def register_collector() -> AutohealCollector:
    """Register the collector in the default registry once per process (idempotent)."""
    global _collector
    if _collector is None:
        _collector = AutohealCollector()
        REGISTRY.register(_collector)
    return _collector
