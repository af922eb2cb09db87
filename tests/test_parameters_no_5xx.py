"""Every bad parameter of /audit and /events is a 4xx: generated values, including the extremes.

The probe found 500s for time bounds that overflow (``999999999d``, ``99999999999999999999s``,
``9999-12-31T23:59:59-23:59``) and a NUL in an ``/events`` filter failing inside the stream.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.services import audit_record
from audit.streams.frames import StreamFilter, StreamRequestError, parse_last_event_id
from tests.live_stream_support import live_web, ops_user, session_cookie

numbers = st.one_of(st.integers(min_value=0, max_value=10**25), st.sampled_from([999999999, 10**20, 2**63]))
durations = st.tuples(numbers, st.sampled_from("smhdx")).map(lambda t: f"{t[0]}{t[1]}")
offsets = st.sampled_from(["Z", "+00:00", "-23:59", "+23:59", "+99:99", "", "-00:01"])
iso_times = st.tuples(st.integers(min_value=0, max_value=99999), st.integers(0, 13), st.integers(0, 32), offsets).map(
    lambda t: f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d}T23:59:59{t[3]}"
)
odd_text = st.text(max_size=30)  # any characters, NUL and surrogates' replacements included
values = st.one_of(durations, iso_times, odd_text, numbers.map(str))
audit_params = st.fixed_dictionaries(
    {},
    optional={
        "since": values,
        "until": values,
        "n": values,
        "cursor": values,
        "kind": st.one_of(odd_text, st.sampled_from(["ack", "ack,action_ok", ",,"])),
        "alertname": odd_text,
        "contains": odd_text,
    },
)
NO_DEADLINE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.postgres
@pytest.mark.django_db
@NO_DEADLINE
@given(params=audit_params)
def test_no_audit_parameter_gets_a_server_error(params: dict[str, str], settings: Any) -> None:
    settings.AUTOHEAL_RATE_LIMIT = (1_000_000, 60)
    client = Client()
    client.force_login(_ops())
    answer = client.get("/audit", params)
    assert answer.status_code in (200, 400), (params, answer.content[:300])
    if answer.status_code == 400:
        assert answer.json()["parameter"] in params


def _ops() -> Any:
    from django.contrib.auth.models import User

    existing = User.objects.filter(username="prop-operator").first()
    return existing or ops_user("prop-operator")


@given(kind=st.one_of(st.none(), odd_text), alertname=st.one_of(st.none(), odd_text, st.just("\x00")))
def test_stream_filters_parse_or_are_refused_with_a_reason(kind: str | None, alertname: str | None) -> None:
    try:
        StreamFilter.parse(kind=kind, alertname=alertname)
    except StreamRequestError as exc:
        assert str(exc).split(":")[0] in ("kind", "alertname")


@given(header=st.one_of(st.none(), values), param=st.one_of(st.none(), values))
def test_stream_positions_parse_or_are_refused_with_a_reason(header: str | None, param: str | None) -> None:
    try:
        position = parse_last_event_id(header, param)
    except StreamRequestError as exc:
        assert "Last-Event-ID" in str(exc)
    else:
        assert position is None or 0 <= position < 2**63


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_bad_stream_filters_are_a_400_from_the_stream_process() -> None:
    first = audit_record(kind="ack", message="inside the replay window")
    cookie = session_cookie(ops_user())
    with live_web() as web:
        for query in (
            f"alertname=%00&lastEventId={first.id - 1}",
            "alertname=%00",
            "lastEventId=%C2%B2",
            f"lastEventId={'9' * 30}",
            "lastEventId=9223372036854775808",
            "kind=nope",
        ):
            answer = httpx.get(web.url(f"/events?{query}"), cookies={"sessionid": cookie}, timeout=10)
            assert answer.status_code == 400, (query, answer.text[:200])
            assert "stream-error" in answer.text
