"""Property: following /audit's pages gives exactly the events a plain reading of the filters picks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import selectors
from audit.models import AuditEvent
from audit.services import audit_record

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

KINDS = ["alert_received", "alert_resolved", "action_ok", "action_fail", "ack"]
NAMES = ["DiskFull", "HighCPU", "diskfull", "Web"]
WORDS = ["web-1", "WEB-12", "db-1", "restart", "Restart failed", "ok", "50%", "a_b", "ü"]

event_strategy = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(KINDS),
        "alertname": st.sampled_from(NAMES),
        "target": st.sampled_from(WORDS),
        "message": st.lists(st.sampled_from(WORDS), max_size=3).map(" ".join),
        "labels": st.dictionaries(st.sampled_from(["container", "severity"]), st.sampled_from(WORDS), max_size=2),
        "minutes_later": st.integers(min_value=0, max_value=90),
    }
)
filter_strategy = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.lists(st.sampled_from(KINDS), min_size=1, max_size=3, unique=True),
        "alertname": st.sampled_from(NAMES),
        "since": st.integers(min_value=0, max_value=1000),
        "until": st.integers(min_value=0, max_value=1000),
        "contains": st.sampled_from(["web-1", "WEB", "Failed", "=db", "severity=", "%", "_", "ü", "k", "zz"]),
    },
)


def reference(events: list[dict[str, Any]], filters: dict[str, Any], start: Any) -> list[int]:
    """The filters read literally, one event at a time."""
    chosen = []
    for event in events:
        if "kind" in filters and event["kind"] not in filters["kind"]:
            continue
        if "alertname" in filters and event["alertname"] != filters["alertname"]:
            continue
        if "since" in filters and event["ts"] < start + timedelta(minutes=filters["since"]):
            continue
        if "until" in filters and event["ts"] > start + timedelta(minutes=filters["until"]):
            continue
        if "contains" in filters:
            needle = filters["contains"].lower()
            fields = [event["alertname"], event["target"], event["message"]]
            fields += [f"{name}={value}" for name, value in event["labels"].items()]
            if not any(needle in field.lower() for field in fields):
                continue
        chosen.append(event["id"])
    return sorted(chosen, reverse=True)


def query(filters: dict[str, Any], start: Any, n: int) -> dict[str, Any]:
    params: dict[str, Any] = {"n": n}
    for name, value in filters.items():
        if name == "kind":
            params[name] = ",".join(value)
        elif name in ("since", "until"):
            params[name] = (start + timedelta(minutes=value)).isoformat()
        else:
            params[name] = value
    return params


@pytest.mark.parametrize("window", [None, 4], ids=["index", "windows"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(event_strategy, min_size=0, max_size=25),
    filters=filter_strategy,
    n=st.integers(min_value=1, max_value=7),
)
def test_pages_hold_exactly_the_matching_events_newest_first(
    ops_client: Any,
    mirror_path: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    window: int | None,
    events: list[dict[str, Any]],
    filters: dict[str, Any],
    n: int,
) -> None:
    # Many pages per test: the per-user rate limit is tested elsewhere.
    settings.AUTOHEAL_RATE_LIMIT = (1_000_000, 60)
    if window is not None:
        monkeypatch.setattr(selectors, "SEARCH_INDEX_BUDGET_MS", 0)
        monkeypatch.setattr(selectors, "SEARCH_WINDOW", window)
    start = timezone.now() - timedelta(days=1)
    with transaction.atomic():
        recorded = []
        minutes = 0
        for spec in events:
            minutes += spec["minutes_later"]  # timestamps move forward, as the writer keeps them
            event = audit_record(
                kind=spec["kind"],
                alertname=spec["alertname"],
                target=spec["target"],
                message=spec["message"],
                data={"labels": spec["labels"]} if spec["labels"] else {},
                ts=start + timedelta(minutes=minutes),
            )
            recorded.append({**spec, "id": event.id, "ts": event.ts})
        expected = reference(recorded, filters, start)

        found: list[int] = []
        url: str | None = "/audit?" + urlencode(query(filters, start, n))
        answers = 0
        while url:
            response = ops_client.get(url)
            assert response.status_code == 200, response.content
            body = response.json()
            assert body["count"] == len(body["events"]) <= n
            found += [event["id"] for event in body["events"]]
            url = body["next"]
            answers += 1
            assert answers <= 60
        assert found == expected
        assert AuditEvent.objects.count() == len(events)
        transaction.set_rollback(True)
