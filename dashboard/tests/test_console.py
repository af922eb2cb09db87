"""GET /console rendered by Django: who may see it, what it shows first, where its stream starts."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from audit.services import audit_record

pytestmark = pytest.mark.django_db


def login(client: Client, role: str | None) -> None:
    user = User.objects.create_user(username=f"user-{role}", password=None)
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    client.force_login(user)


def rows(html: str) -> list[tuple[int, str]]:
    return [(int(i), k) for i, k in re.findall(r'<tr data-id="(\d+)" data-kind="([a-z_]+)">', html)]


def test_anonymous_is_sent_to_the_login_page(client: Client) -> None:
    answer = client.get("/console")

    assert answer.status_code == 302
    assert answer["Location"].startswith("/accounts/login/?next=/console")


def test_user_without_a_role_is_refused(client: Client) -> None:
    login(client, None)

    assert client.get("/console").status_code == 403


@pytest.mark.parametrize("role", ["ops", "admin"])
def test_console_shows_the_latest_events_newest_first(client: Client, role: str) -> None:
    written = [audit_record(kind="ack", alertname="DiskFull", message=f"m{i}").id for i in range(3)]
    login(client, role)

    answer = client.get("/console")

    assert answer.status_code == 200
    html = answer.content.decode()
    assert [i for i, _ in rows(html)] == list(reversed(written))
    # The stream starts right after the newest rendered event: nothing in between is missed.
    assert f'data-through="{written[-1]}"' in html


def test_kind_filter_renders_only_matching_events_but_streams_from_the_newest(client: Client) -> None:
    kept = audit_record(kind="action_ok", alertname="A").id
    newest = audit_record(kind="ack", alertname="A").id
    login(client, "ops")

    html = client.get("/console?kind=action_ok").content.decode()

    assert rows(html) == [(kept, "action_ok")]
    assert 'data-kind="action_ok"' in html
    # A rare kind must not make the stream replay from far back.
    assert f'data-through="{newest}"' in html


def test_an_empty_trail_still_renders_a_page_that_says_so(client: Client) -> None:
    login(client, "ops")

    html = client.get("/console").content.decode()

    assert rows(html) == []
    assert "No events yet" in html
    assert 'data-through="0"' in html


def test_unknown_kind_is_a_400_naming_the_parameter(client: Client) -> None:
    login(client, "ops")

    answer = client.get("/console?kind=bogus")

    assert answer.status_code == 400
    assert "kind: unknown audit kind" in answer.content.decode()


def test_page_has_no_inline_script_or_style_so_the_csp_allows_it(client: Client) -> None:
    login(client, "ops")

    html = client.get("/console").content.decode()

    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert "<style" not in html
    assert " style=" not in html


def test_console_costs_a_fixed_number_of_queries(client: Client, django_assert_num_queries: Any) -> None:
    for i in range(50):
        audit_record(kind="ack", alertname="DiskFull", message=str(i))
    login(client, "ops")

    # session, user, roles, newest id, the page of events: however many events there are.
    with django_assert_num_queries(5):
        client.get("/console")
