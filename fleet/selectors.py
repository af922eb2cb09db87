"""Reads of the fleet used by the API, the Command Center and the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from fleet.models import Agent
from remediation.models import Job


@dataclass(frozen=True)
class AgentRow:
    """One agent as operators see it."""

    host: str
    version: str
    last_seen: datetime
    containers: int
    jobs_in_flight: int
    connected: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "version": self.version,
            "last_seen": self.last_seen.isoformat(),
            "containers": self.containers,
            "jobs_in_flight": self.jobs_in_flight,
            "connected": self.connected,
        }


def agents_overview(*, now: datetime | None = None) -> list[AgentRow]:
    """Every agent seen, by host: connected when heard from within AUTOHEAL_AGENT_CONNECTED_SECONDS."""
    now = now or timezone.now()
    since = now - timedelta(seconds=settings.AUTOHEAL_AGENT_CONNECTED_SECONDS)
    in_flight = dict(
        Job.objects.filter(state=Job.State.RUNNING)
        .exclude(host="")
        .values("host")
        .annotate(n=Count("id"))
        .values_list("host", "n")
    )
    return [
        AgentRow(
            host=agent.host,
            version=agent.version,
            last_seen=agent.last_seen,
            containers=len(agent.inventory or []),
            jobs_in_flight=in_flight.get(agent.host, 0),
            connected=agent.last_seen >= since,
        )
        for agent in Agent.objects.all()
    ]
