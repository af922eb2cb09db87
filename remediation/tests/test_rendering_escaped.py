"""Text from an alert is shown escaped everywhere: /ops/, /console, the admin, /audit and the JSONL.

A label holding a terminal escape (U+001B), DEL, a C1 control or a line separator must neither
reach a page or file raw (it would recolour a terminal, hide text or split a JSONL line) nor be
lost: it is written as ``\\u001b`` where people read it, and kept exact in the JSON values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User

from audit.models import AuditEvent
from remediation.models import Alert, Job, Policy

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "escape-token"
NAME = "Evil\x1b[31mRed"
CONTAINER = "web\u2028fake-line\x7fdel\x85nel"
RAW = ["\x1b", "\u2028", "\x7f", "\x85"]


@pytest.fixture
def delivered(client: Any, settings: Any, tmp_path: Path) -> Path:
    settings.AUTOHEAL_WEBHOOK_TOKENS = [TOKEN]
    mirror = tmp_path / "audit.jsonl"
    settings.AUTOHEAL_AUDIT_JSONL = str(mirror)
    Policy.objects.create(
        name="note", matchers=['alertname=~"Evil.*"'], action="log_only", target="{{ labels.container }}"
    )
    body = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": NAME, "container": CONTAINER},
                "annotations": {"summary": "line one\u2029line two"},
                "startsAt": "2026-12-03T09:00:00Z",
                "fingerprint": "esc1",
            }
        ],
    }
    answer = client.post(
        "/alert", data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
    )
    assert answer.status_code == 202
    assert Job.objects.get().target == CONTAINER  # stored exactly
    return mirror


def login(client: Any, role: str) -> None:
    user = User.objects.create_user(username=f"user-{role}", password=None)
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    if role == "admin":
        user.is_staff = True
        user.save()
    client.force_login(user)


def assert_escaped(text: str) -> None:
    for char in RAW:
        assert char not in text, f"raw U+{ord(char):04X} in the output"


def test_ops_and_console_pages_show_control_characters_escaped(client: Any, delivered: Path) -> None:
    login(client, "ops")
    ops = client.get("/ops/").content.decode()
    assert_escaped(ops)
    assert "Evil\\u001b[31mRed" in ops
    assert "web\\u2028fake-line\\u007fdel\\u0085nel" in ops
    console = client.get("/console").content.decode()
    assert_escaped(console)
    assert "Evil\\u001b[31mRed" in console


def test_admin_pages_show_control_characters_escaped(client: Any, delivered: Path) -> None:
    login(client, "admin")
    alert = Alert.objects.get()
    for url in (
        "/admin/remediation/alert/",
        f"/admin/remediation/alert/{alert.pk}/change/",
        "/admin/remediation/job/",
        "/admin/audit/auditevent/",
        f"/admin/audit/auditevent/{AuditEvent.objects.get(kind='alert_received').pk}/change/",
    ):
        page = client.get(url)
        assert page.status_code == 200, url
        assert_escaped(page.content.decode())
    change = client.get(f"/admin/remediation/alert/{alert.pk}/change/").content.decode()
    assert "\\u2028" in change and "line one\\u2029line two" in change


def test_the_audit_api_and_the_jsonl_mirror_escape_them_and_keep_the_values(client: Any, delivered: Path) -> None:
    login(client, "ops")
    answer = client.get("/audit?n=50")
    assert answer.status_code == 200
    assert_escaped(answer.content.decode("utf-8"))
    events = answer.json()["events"]
    assert any(e["alertname"] == NAME for e in events)  # the value itself is exact
    assert any(e["target"] == CONTAINER for e in events)

    text = delivered.read_text(encoding="utf-8")
    assert_escaped(text)
    lines = text.splitlines()  # str.splitlines breaks on U+2028 too: one event per line
    assert len(lines) == AuditEvent.objects.count()
    received = [json.loads(line) for line in lines if json.loads(line)["kind"] == "alert_received"]
    assert received[0]["data"]["labels"] == {"alertname": NAME, "container": CONTAINER}


def test_the_live_stream_frames_escape_them_and_keep_the_values(delivered: Path) -> None:
    from audit.streams.frames import stream_item

    event = AuditEvent.objects.get(kind="alert_received").as_dict()
    frame = stream_item(event).frame.decode("utf-8")
    assert_escaped(frame)
    assert len(frame.split("\n")) == 5  # id, event, data, blank line: one data line
    data = frame.split("\n")[2].removeprefix("data: ")
    assert json.loads(data)["data"]["labels"]["container"] == CONTAINER
