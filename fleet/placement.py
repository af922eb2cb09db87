"""Placement: which Docker host's agent runs a job, decided when intake queues it.

A policy may name the host (``host: "{{ labels.host }}"``); without it a Docker action's container
is looked up by name in the agents' inventories: found on one host, the job goes there; on several,
it is skipped as ``ambiguous_target``; on none (or with no agents at all), the central worker acts
on its own engine as before. Webhook and log-only actions always run centrally.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from remediation.models import DOCKER_ACTIONS, Action

AGENT_ACTIONS = frozenset(DOCKER_ACTIONS | {Action.COMMAND})
AMBIGUOUS_TARGET = "ambiguous_target"
HOST_OFFLINE = "host_offline"


@dataclass(frozen=True)
class Placement:
    """Where a job runs ("" is the central worker), or why it cannot be placed."""

    host: str = ""
    skip_reason: str = ""
    message: str = ""
    candidates: tuple[str, ...] = ()


def local_hosts() -> tuple[str, ...]:
    """Host values the central worker claims: unplaced jobs, and AUTOHEAL_LOCAL_HOST's."""
    local = settings.AUTOHEAL_LOCAL_HOST
    return ("", local) if local else ("",)


def place(*, action: str, target: str, host: str, inventories: dict[str, list[str]]) -> Placement:
    """Pure: the placement of one job from the rendered host and the hosts' container names."""
    if action not in AGENT_ACTIONS:
        return Placement()
    if host:
        return Placement(host=host[:100])
    if action == Action.COMMAND:
        return Placement()
    found = tuple(sorted(name for name, containers in inventories.items() if target in containers))
    if len(found) == 1:
        return Placement(host=found[0])
    if len(found) > 1:
        return Placement(
            skip_reason=AMBIGUOUS_TARGET,
            message=(
                f"a container named {target} runs on {len(found)} hosts ({', '.join(found)}) and the policy names "
                "no host: give the policy a host template such as '{{ labels.host }}'"
            ),
            candidates=found,
        )
    return Placement()


class Placer:
    """Places the jobs of one intake transaction, reading the inventories at most once."""

    def __init__(self) -> None:
        self._inventories: dict[str, list[str]] | None = None

    def inventories(self) -> dict[str, list[str]]:
        if self._inventories is None:
            from fleet.models import Agent

            self._inventories = {agent.host: agent.container_names for agent in Agent.objects.all()}
        return self._inventories

    def place(self, *, action: str, target: str, host: str) -> Placement:
        if action not in AGENT_ACTIONS or (host or action == Action.COMMAND):
            return place(action=action, target=target, host=host, inventories={})
        return place(action=action, target=target, host=host, inventories=self.inventories())
