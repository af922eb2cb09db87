"""The operator quicklinks: where each part of Autoheal and its monitoring stack lives."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """One quicklink; ``url`` is empty when the place is not configured, ``hint`` says how."""

    name: str
    url: str
    hint: str = ""


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + path


def links_build(*, base_url: str, grafana_url: str, prometheus_url: str, alertmanager_url: str) -> list[Link]:
    """The quicklinks for an Autoheal reached at ``base_url``; pure, so the same list everywhere."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"the base URL must start with http:// or https:// (got {base_url!r})")
    links = [
        Link("Command Center", _join(base_url, "/ops/")),
        Link("Live console", _join(base_url, "/console")),
        Link("Audit trail", _join(base_url, "/audit")),
        Link("Metrics", _join(base_url, "/metrics")),
        Link("API docs", _join(base_url, "/api/docs/")),
        Link("Admin", _join(base_url, "/admin/")),
        Link("Health", _join(base_url, "/")),
    ]
    external = [
        ("Grafana dashboard", grafana_url, "/d/autoheal", "AUTOHEAL_GRAFANA_URL"),
        ("Prometheus", prometheus_url, "", "AUTOHEAL_PROMETHEUS_URL"),
        ("Alertmanager", alertmanager_url, "", "AUTOHEAL_ALERTMANAGER_URL"),
    ]
    for name, root, path, variable in external:
        if root:
            links.append(Link(name, _join(root, path) if path else root))
        else:
            links.append(Link(name, "", f"not configured: set {variable}"))
    return links
