"""Reading Alertmanager's times: nanoseconds, offsets and Go's zero time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediation.payload import parse_rfc3339


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:11:12.123456789Z", datetime(2026, 11, 20, 10, 11, 12, 123456, tzinfo=UTC)),
        ("2026-11-20T10:11:12Z", datetime(2026, 11, 20, 10, 11, 12, tzinfo=UTC)),
        ("2026-11-20t10:11:12.5z", datetime(2026, 11, 20, 10, 11, 12, 500000, tzinfo=UTC)),
        ("2026-11-20T12:11:12.000000001+02:00", datetime(2026, 11, 20, 10, 11, 12, tzinfo=UTC)),
        ("2026-11-20T05:41:12-04:30", datetime(2026, 11, 20, 10, 11, 12, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", None),
    ],
)
def test_alertmanager_times_are_read_in_utc(text: str, expected: datetime | None) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20 10:11:12Z",
        "2026-11-20T10:11:12",
        "2026-11-20T10:11Z",
        "2026-13-01T00:00:00Z",
        "2026-11-20T10:11:12+25:00",
        "",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not"):
        parse_rfc3339(text)


@given(
    moment=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    nanos=st.integers(min_value=0, max_value=999),
    offset_minutes=st.integers(min_value=-23 * 60, max_value=23 * 60),
)
def test_nanosecond_times_in_any_offset_read_back_to_the_microsecond(
    moment: datetime, nanos: int, offset_minutes: int
) -> None:
    offset = timedelta(minutes=offset_minutes)
    local = (moment + offset).replace(tzinfo=None)
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond:06d}{nanos:03d}{sign}{hours:02d}:{minutes:02d}"
    assert parse_rfc3339(text) == moment
