"""The SSE frame of an audit event and the stream's request parsing: pure, no services."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.models import ALL_KINDS
from audit.streams.frames import StreamFilter, StreamRequestError, parse_last_event_id, stream_item

texts = st.text(max_size=200)


@given(
    event_id=st.integers(min_value=1, max_value=2**62),
    kind=st.sampled_from(ALL_KINDS),
    alertname=texts,
    message=texts,
    labels=st.dictionaries(texts, texts, max_size=5),
)
def test_any_event_is_one_frame_with_its_id_its_kind_and_its_json(
    event_id: int, kind: str, alertname: str, message: str, labels: dict[str, str]
) -> None:
    event = {"id": event_id, "kind": kind, "alertname": alertname, "message": message, "data": {"labels": labels}}

    frame = stream_item(event).frame.decode()

    # Whatever the alert's text holds (newlines included), the frame is exactly three fields.
    assert frame.endswith("\n\n")
    lines = frame[:-2].split("\n")
    assert lines[0] == f"id: {event_id}"
    assert lines[1] == "event: audit"
    assert len(lines) == 3
    assert lines[2].startswith("data: ")
    assert json.loads(lines[2][len("data: ") :]) == event


def test_filters_match_kinds_and_exact_alertname() -> None:
    flt = StreamFilter.parse(kind="action_ok, action_fail", alertname="DiskFull")

    assert flt.matches("action_ok", "DiskFull")
    assert not flt.matches("ack", "DiskFull")
    assert not flt.matches("action_fail", "DiskFull2")
    assert StreamFilter.parse(kind="", alertname=None).matches("ack", "anything")


@pytest.mark.parametrize(
    ("kind", "alertname", "named"),
    [("nope", "", "kind"), ("ack,nope", "", "kind"), ("", "x" * 201, "alertname")],
)
def test_bad_filters_are_refused_naming_the_parameter(kind: str, alertname: str, named: str) -> None:
    with pytest.raises(StreamRequestError, match=f"^{named}:"):
        StreamFilter.parse(kind=kind, alertname=alertname)


def test_last_event_id_header_wins_over_the_query_parameter() -> None:
    assert parse_last_event_id("42", "7") == 42
    assert parse_last_event_id(None, "7") == 7
    assert parse_last_event_id("", "") is None
    for bad in ("-1", "audit:3", "error", "1.5"):
        with pytest.raises(StreamRequestError, match=r"^Last-Event-ID:"):
            parse_last_event_id(bad, None)
