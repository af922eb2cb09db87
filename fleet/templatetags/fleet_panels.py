"""``{% fleet_agents_panel %}``: the Agents panel of the Command Center, rendered from the selector."""

from __future__ import annotations

from typing import Any

from django import template

from fleet.selectors import agents_overview

register = template.Library()


@register.inclusion_tag("fleet/agents_panel.html")
def fleet_agents_panel() -> dict[str, Any]:
    agents = agents_overview()
    return {"agents": agents, "missing": [a.host for a in agents if not a.connected]}
