"""Notification targets from ``AUTOHEAL_NOTIFY_URLS`` (or ``AUTOHEAL_NOTIFY_URLS_FILE``).

Each entry is ``NAME=APPRISE_URL`` or ``NAME[event|event]=APPRISE_URL`` (all events when no list
is given), entries separated by commas or new lines. A comma that does not start a new
``NAME=scheme://`` entry belongs to the URL (e-mail lists, for instance). The URLs hold secrets:
they stay in the environment; policies and the audit trail only name targets, and any URL shown
is masked by Apprise's own privacy rendering.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

# The events a target can choose, and the audit kind each comes from.
EVENTS: dict[str, str] = {
    "approval_requested": "approval_requested",
    "action_ok": "action_ok",
    "action_fail": "action_failed",
    "action_verified": "action_verified",
    "action_ineffective": "action_ineffective",
    "incident_escalated": "incident_escalated",
    "circuit_open": "circuit_opened",
    "circuit_closed": "circuit_closed",
    "switch_changed": "kill_switch_changed",
}
EVENT_NAMES = tuple(EVENTS.values())
_ENTRY = re.compile(r"^\s*(?P<name>[A-Za-z0-9_-]{1,100})(?:\[(?P<events>[^\]]*)\])?\s*=\s*(?P<url>[a-z0-9+.-]+://.*)$")


class NotifyConfigError(ValueError):
    """``AUTOHEAL_NOTIFY_URLS`` cannot be understood; the message never contains a URL."""


@dataclass(frozen=True)
class Target:
    """One named Apprise URL and the events it wants."""

    name: str
    url: str
    events: frozenset[str]

    def wants(self, event: str) -> bool:
        return event in self.events


def mask_url(url: str) -> str:
    """The URL with its secrets hidden, as Apprise renders it for logs; never the raw URL."""
    import apprise

    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return url.split("://", 1)[0] + "://[not a valid notification URL]"
    return str(plugin.url(privacy=True))


def parse_targets(raw: str) -> list[Target]:
    """Parse the setting's text; NotifyConfigError names the entry (by position) that is wrong."""
    entries: list[str] = []
    for piece in re.split(r"[,\n]", raw or ""):
        if _ENTRY.match(piece):
            entries.append(piece.strip())
        elif entries and piece.strip():
            entries[-1] += "," + piece.strip()
        elif piece.strip():
            raise NotifyConfigError(
                f"AUTOHEAL_NOTIFY_URLS entry {len(entries) + 1} is not NAME=URL or NAME[event|event]=URL"
            )
    targets: list[Target] = []
    for entry in entries:
        match = _ENTRY.match(entry)
        assert match is not None
        name = match.group("name")
        if any(t.name == name for t in targets):
            raise NotifyConfigError(f"AUTOHEAL_NOTIFY_URLS names the target {name!r} twice")
        wanted = match.group("events")
        if wanted is None or not wanted.strip():
            events = frozenset(EVENT_NAMES)
        else:
            chosen = {e.strip() for e in wanted.split("|") if e.strip()}
            unknown = sorted(chosen - set(EVENT_NAMES))
            if unknown:
                raise NotifyConfigError(
                    f"AUTOHEAL_NOTIFY_URLS target {name!r}: unknown event {unknown[0]!r} (known: {', '.join(EVENT_NAMES)})"
                )
            events = frozenset(chosen)
        targets.append(Target(name=name, url=match.group("url").strip(), events=events))
    return targets


def configured_targets() -> list[Target]:
    return parse_targets(settings.AUTOHEAL_NOTIFY_URLS)
