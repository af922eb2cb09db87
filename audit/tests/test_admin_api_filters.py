"""The audit admin's list takes the /audit API's filters, with the same names and meanings."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.services import audit_record

pytestmark = pytest.mark.django_db

LIST = "/admin/audit/auditevent/"


def listed(answer: Any) -> list[int]:
    return sorted(int(i) for i in re.findall(r'href="/admin/audit/auditevent/(\d+)/change/', answer.content.decode()))


@pytest.fixture
def trail() -> dict[str, int]:
    # The first event of the trail, so its earlier time keeps ts ordered like id.
    old = audit_record(
        kind="action_ok", alertname="DiskFull", message="cleaned /var", ts=timezone.now() - timedelta(hours=3)
    )
    return {
        "old": old.id,
        "ok": audit_record(kind="action_ok", alertname="ContainerUnhealthy", message="restarted web-1").id,
        "fail": audit_record(kind="action_fail", alertname="ContainerUnhealthy", message="web-2 timed out").id,
        "ack": audit_record(kind="ack", alertname="DiskFull", message="on it").id,
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("kind=action_ok,action_fail", ["old", "ok", "fail"]),
        ("alertname=DiskFull", ["old", "ack"]),
        ("since=1h", ["ok", "fail", "ack"]),
        ("until=1h", ["old"]),
        ("contains=WEB-2", ["fail"]),
        ("kind=action_ok&since=1h", ["ok"]),
    ],
)
def test_api_filters_narrow_the_admin_list(
    admin_client: Any, trail: dict[str, int], query: str, expected: list[str]
) -> None:
    answer = admin_client.get(f"{LIST}?{query}")

    assert answer.status_code == 200
    assert listed(answer) == sorted(trail[name] for name in expected)


def test_a_bad_filter_value_is_named_and_the_list_is_not_narrowed(admin_client: Any, trail: dict[str, int]) -> None:
    answer = admin_client.get(f"{LIST}?since=yesterday-ish", follow=True)

    assert "Filter not applied: since: expected an ISO 8601 time" in answer.content.decode()
    assert listed(answer) == sorted(trail.values())
