"""The fleet's gauges on ``/metrics``, read from the agents' rows at scrape time.

``autoheal_agents_connected``: agents heard from within AUTOHEAL_AGENT_CONNECTED_SECONDS;
``autoheal_agent_last_seen_timestamp_seconds{host}``: when each agent was last heard from (the
``AutohealAgentSilent`` rule alerts on it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import Error
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

FLEET_GAUGES = ("autoheal_agents_connected", "autoheal_agent_last_seen_timestamp_seconds")


class FleetCollector(Collector):
    """Reads the agents at scrape time; every web process answers with the same numbers."""

    def collect(self) -> Iterator[Metric]:
        from fleet.selectors import agents_overview

        try:
            rows = agents_overview()
        except Error:
            logger.warning("fleet metrics skipped: the database is unavailable")
            return
        connected = GaugeMetricFamily(
            "autoheal_agents_connected", "Fleet agents heard from within AUTOHEAL_AGENT_CONNECTED_SECONDS."
        )
        connected.add_metric([], sum(1 for row in rows if row.connected))
        yield connected
        last_seen = GaugeMetricFamily(
            "autoheal_agent_last_seen_timestamp_seconds",
            "When each host's agent was last heard from (Unix time).",
            labels=["host"],
        )
        for row in rows:
            last_seen.add_metric([row.host], row.last_seen.timestamp())
        yield last_seen

    def describe(self) -> Iterator[Metric]:
        # Described without a database query, so registering never touches the database.
        yield GaugeMetricFamily("autoheal_agents_connected", "")
        yield GaugeMetricFamily("autoheal_agent_last_seen_timestamp_seconds", "", labels=["host"])


_collector: FleetCollector | None = None


def register_fleet_collector() -> FleetCollector:
    """Register once per process (idempotent)."""
    global _collector
    if _collector is None:
        _collector = FleetCollector()
        REGISTRY.register(_collector)
    return _collector
