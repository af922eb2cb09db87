"""The pure mapping from audit events to metric deltas."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from audit.models import ALL_KINDS
from observability.series import (
    ACTION_DURATION,
    ACTION_RESULTS,
    ACTIONS,
    AUDIT_WRITE,
    EVENTS,
    LAST_EVENT,
    MAX,
    audit_deltas,
    labels_key,
)


@dataclass
class Event:
    kind: str
    alertname: str
    ts: datetime
    data: Any = field(default_factory=dict)


durations = st.one_of(
    st.none(),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.just(float("nan")),
    st.just(-1.0),
    st.text(max_size=3),
    st.booleans(),
)
events = st.builds(
    Event,
    kind=st.sampled_from(ALL_KINDS),
    alertname=st.sampled_from(["", "A", "B", 'we"ird\\name']),
    ts=st.integers(min_value=1_600_000_000, max_value=1_900_000_000).map(lambda t: datetime.fromtimestamp(t, UTC)),
    data=st.one_of(
        st.fixed_dictionaries({"duration_seconds": durations}),
        st.fixed_dictionaries({"escalated": st.booleans(), "false_positive": st.booleans()}),
        st.just([]),
    ),
)


@given(st.lists(events, max_size=20), st.floats(min_value=0, max_value=10))
def test_deltas_count_every_event_once_and_write_each_series_once(batch: list[Event], elapsed: float) -> None:
    deltas = audit_deltas(batch, elapsed)

    keys = [(d.name, d.labels) for d in deltas]
    assert keys == sorted(set(keys)), "one row per series, in lock order"
    assert sum(d.value for d in deltas if d.name == EVENTS.name) == len(batch)
    actions = sum(d.value for d in deltas if d.name == ACTIONS.name)
    assert actions == sum(1 for e in batch if e.kind in ACTION_RESULTS)
    observed = sum(1 for e in batch if e.kind in ("action_ok", "action_fail") and _valid(e.data))
    assert sum(d.value for d in deltas if d.name == f"{ACTION_DURATION.name}_bucket") == observed
    assert sum(d.value for d in deltas if d.name == f"{AUDIT_WRITE.name}_bucket") == (1 if batch else 0)
    latest = [d for d in deltas if d.name == LAST_EVENT.name]
    if batch:
        assert latest[0].merge == MAX
        assert latest[0].value == max(e.ts.timestamp() for e in batch)
    else:
        assert deltas == []


def _valid(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    value = data.get("duration_seconds")
    return isinstance(value, float) and value == value and value >= 0


def test_label_sets_are_stored_in_one_canonical_form() -> None:
    assert labels_key({"result": "ok", "alertname": "A"}) == labels_key({"alertname": "A", "result": "ok"})
