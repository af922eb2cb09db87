"""Alertmanager's silences, through its API v2: respected before acting, and created while repairing.

``AUTOHEAL_ALERTMANAGER_URL`` is a comma list (an HA pair shares its silences by gossip, so any
member that answers will do). The list of silences is cached for at most ``CACHE_SECONDS`` per
process: a burst of jobs asks Alertmanager once, and a silence an engineer just created is seen
within seconds. Matching follows Alertmanager's rules: regexes are anchored to the whole value and
a missing label has the empty value.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from django.conf import settings

CACHE_SECONDS = 5.0
REQUEST_TIMEOUT = 3.0
# Silences Autoheal created itself carry this creator; they never stop Autoheal's own next attempt.
CREATED_BY = "autoheal"

_lock = threading.Lock()
_cache: dict[str, Any] = {"at": None, "silences": None}


class AlertmanagerUnavailable(Exception):
    """No configured Alertmanager answered."""


@dataclass(frozen=True)
class Silence:
    """An active silence as the audit trail records it."""

    id: str
    created_by: str
    comment: str
    ends_at: str
    matchers: tuple[dict[str, Any], ...]

    def as_data(self) -> dict[str, str]:
        return {"id": self.id, "created_by": self.created_by, "comment": self.comment, "ends_at": self.ends_at}


def alertmanager_urls() -> list[str]:
    raw = settings.AUTOHEAL_ALERTMANAGER_URL or ""
    return [url.strip().rstrip("/") for url in raw.split(",") if url.strip()]


def configured() -> bool:
    return bool(alertmanager_urls())


def _request(method: str, path: str, *, json: Any = None, prefer: str = "") -> tuple[str, requests.Response]:
    """Ask the preferred Alertmanager first, then each configured one until one answers."""
    urls = alertmanager_urls()
    if prefer in urls:
        urls.remove(prefer)
        urls.insert(0, prefer)
    problems = []
    for url in urls:
        try:
            response = requests.request(method, url + path, json=json, timeout=REQUEST_TIMEOUT)
        except requests.RequestException as exc:
            problems.append(f"{url}: {type(exc).__name__}")
            continue
        if response.status_code >= 500:
            problems.append(f"{url}: HTTP {response.status_code}")
            continue
        return url, response
    raise AlertmanagerUnavailable("no Alertmanager answered (" + "; ".join(problems or ["none configured"]) + ")")


def cache_clear() -> None:
    with _lock:
        _cache["at"] = None
        _cache["silences"] = None


def active_silences() -> list[Silence]:
    """The active silences, at most ``CACHE_SECONDS`` old. Raises AlertmanagerUnavailable."""
    with _lock:
        at = _cache["at"]
        if at is not None and time.monotonic() - at < CACHE_SECONDS:
            return list(_cache["silences"])
    _, response = _request("GET", "/api/v2/silences")
    if response.status_code != 200:
        raise AlertmanagerUnavailable(f"Alertmanager answered HTTP {response.status_code} to the silence list")
    found = [
        Silence(
            id=str(item.get("id", "")),
            created_by=str(item.get("createdBy", "")),
            comment=str(item.get("comment", "")),
            ends_at=str(item.get("endsAt", "")),
            matchers=tuple(item.get("matchers") or ()),
        )
        for item in response.json()
        if (item.get("status") or {}).get("state") == "active"
    ]
    with _lock:
        _cache["at"] = time.monotonic()
        _cache["silences"] = found
    return list(found)


def matcher_matches(matcher: dict[str, Any], labels: dict[str, str]) -> bool:
    """One Alertmanager API matcher against an alert's labels (missing label = empty value)."""
    value = str(labels.get(str(matcher.get("name", "")), ""))
    wanted = str(matcher.get("value", ""))
    if matcher.get("isRegex"):
        try:
            hit = re.fullmatch(wanted, value) is not None
        except re.error:
            return False
    else:
        hit = value == wanted
    return hit if matcher.get("isEqual", True) else not hit


def comment_prefix(job_id: int) -> str:
    """How Autoheal's own silence comments start: they name the job."""
    return f"Autoheal job {job_id}:"


def own_silence_ids(*, job_id: int) -> list[str]:
    """Active silences Autoheal created for this job, read fresh (for a row a crash left without an id)."""
    cache_clear()
    prefix = comment_prefix(job_id)
    return [s.id for s in active_silences() if s.created_by == CREATED_BY and s.comment.startswith(prefix)]


def silence_matching(labels: dict[str, str]) -> Silence | None:
    """An active silence, not Autoheal's own, whose matchers all match the labels; None if none."""
    for silence in active_silences():
        if silence.created_by == CREATED_BY:
            continue
        if silence.matchers and all(matcher_matches(m, labels) for m in silence.matchers):
            return silence
    return None


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def silence_create(*, labels: dict[str, str], starts_at: datetime, ends_at: datetime, comment: str) -> tuple[str, str]:
    """Create a silence matching exactly these labels; returns (alertmanager url, silence id)."""
    body = {
        "matchers": [
            {"name": str(k), "value": str(v), "isRegex": False, "isEqual": True} for k, v in sorted(labels.items())
        ],
        "startsAt": _iso(starts_at),
        "endsAt": _iso(ends_at),
        "createdBy": CREATED_BY,
        "comment": comment,
    }
    url, response = _request("POST", "/api/v2/silences", json=body)
    if response.status_code != 200:
        raise AlertmanagerUnavailable(f"Alertmanager refused the silence: HTTP {response.status_code}")
    return url, str(response.json().get("silenceID", ""))


def silence_expire(*, silence_id: str, prefer: str = "") -> bool:
    """Expire one silence. True when Alertmanager confirmed it, or it no longer exists."""
    try:
        _, response = _request("DELETE", f"/api/v2/silence/{silence_id}", prefer=prefer)
        if response.status_code < 300 or response.status_code == 404:
            return True
    except AlertmanagerUnavailable:
        # Expiring a silence that already expired is an error on Alertmanager's side: look.
        pass
    _, response = _request("GET", f"/api/v2/silence/{silence_id}", prefer=prefer)
    if response.status_code == 404:
        return True
    return response.status_code == 200 and (response.json().get("status") or {}).get("state") == "expired"
