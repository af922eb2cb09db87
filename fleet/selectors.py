"""Reads of the fleet used by the API, the Command Center and the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
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
    # One query, however many agents: the jobs in flight are counted in a subquery.
    in_flight = (
        Job.objects.filter(state=Job.State.RUNNING, host=OuterRef("host"))
        .order_by()
        .values("host")
        .annotate(n=Count("id"))
        .values("n")
    )
    agents = Agent.objects.annotate(jobs_in_flight=Coalesce(Subquery(in_flight), 0)).order_by("host")
    return [
        AgentRow(
            host=agent.host,
            version=agent.version,
            last_seen=agent.last_seen,
            containers=len(agent.inventory or []),
            jobs_in_flight=agent.jobs_in_flight,
            connected=agent.last_seen >= since,
        )
        for agent in agents
    ]
