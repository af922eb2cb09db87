"""Notifications through Apprise to a local JSON receiver and a local SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from audit.models import AuditEvent
from notifications.models import Notification
from notifications.outbox import notification_deliver_one, notification_test, notifications_enqueue
from notifications.targets import EVENT_NAMES, NotifyConfigError, parse_targets
from remediation import safety
from remediation.tests.exec_helpers import drain, make_alert, make_job, make_policy

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class JsonReceiver:
    """A loopback HTTP receiver for Apprise's json:// URLs; answers ``status`` (500 makes it fail)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if receiver.status == 200:
                    receiver.received.append({"path": self.path, "body": body})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"


@pytest.fixture
def receiver() -> Iterator[JsonReceiver]:
    r = JsonReceiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = _free_port()  # aiosmtpd's start-up check does not work with port 0
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def deliver_all(max_rounds: int = 20) -> None:
    for _ in range(max_rounds):
        if not notification_deliver_one():
            return


def start_outbox() -> None:
    """The first pass sets the cursor at the end of the trail: history is not notified."""
    notifications_enqueue()


def test_each_event_reaches_the_json_receiver_and_the_audit_masks_the_url(
    settings: Any, receiver: JsonReceiver
) -> None:
    settings.AUTOHEAL_NOTIFY_URLS = f"chat={receiver.url().replace('json://', 'json://bot:s3cret-pass@')}"
    start_outbox()
    job = make_job(policy=make_policy(action="log_only", mode="approve"), alert=make_alert())
    drain()  # approval_requested, delivered by the worker's outbox step
    deliver_all()
    titles = [r["body"]["title"] for r in receiver.received]
    assert any("approval requested" in t for t in titles), titles
    body = next(r["body"]["message"] for r in receiver.received if "approval requested" in r["body"]["title"])
    assert f"/ops/#job-{job.pk}" in body
    sent = AuditEvent.objects.filter(kind="notification_sent").first()
    assert sent is not None and sent.data["target"] == "chat" and sent.data["event"] == "approval_requested"
    trail = json.dumps(list(AuditEvent.objects.values_list("data", flat=True)))
    assert "s3cret-pass" not in trail
    assert "bot:****@" in sent.data["url"]


def test_targets_choose_their_events_and_policies_choose_their_targets(settings: Any, receiver: JsonReceiver) -> None:
    settings.AUTOHEAL_NOTIFY_URLS = (
        f"pager[action_failed|circuit_opened]={receiver.url('pager')},chat={receiver.url('chat')},"
        f"other={receiver.url('other')}"
    )
    settings.AUTOHEAL_COMMAND_ALLOW = [shutil.which("false")]  # the operator allows the failing program
    start_outbox()
    policy = make_policy(action="command", params={"argv": ["false"]}, notify=["pager", "chat"])
    make_job(policy=policy, alert=make_alert())
    drain()
    safety.switch_set(enabled=False, actor="alice", reason="maintenance")
    deliver_all()
    by_path: dict[str, list[str]] = {}
    for r in receiver.received:
        by_path.setdefault(r["path"], []).append(r["body"]["title"])
    assert any("action failed" in t for t in by_path["/pager"])
    assert not any("kill switch" in t for t in by_path["/pager"])
    assert any("action failed" in t for t in by_path["/chat"])
    assert any("kill switch changed" in t for t in by_path["/chat"])
    # "other" is not in the policy's notify list, but global events reach every target.
    assert not any("action" in t for t in by_path.get("/other", []))
    assert any("kill switch changed" in t for t in by_path["/other"])


def test_a_failed_send_is_retried_with_backoff_and_audited(settings: Any, receiver: JsonReceiver) -> None:
    settings.AUTOHEAL_NOTIFY_URLS = f"chat={receiver.url()}"
    receiver.status = 500
    assert notification_test(actor="alice") == 1
    assert notification_deliver_one()
    row = Notification.objects.get()
    assert row.state == Notification.State.PENDING and row.attempts == 1
    failed = AuditEvent.objects.get(kind="notification_failed")
    assert failed.data["will_retry"] is True and failed.data["retry_in_seconds"] == 5
    # Not due yet: nothing is sent before the backoff passed.
    assert not notification_deliver_one()
    receiver.status = 200
    Notification.objects.update(next_try_at=row.created_at)
    assert notification_deliver_one()
    row.refresh_from_db()
    assert row.state == Notification.State.SENT and row.attempts == 2
    assert receiver.received[0]["body"]["title"] == "Autoheal: test notification"


def test_mailto_reaches_a_local_smtp_server(settings: Any, smtp: tuple[Mailbox, int]) -> None:
    box, port = smtp
    settings.AUTOHEAL_NOTIFY_URLS = (
        f"mail=mailto://localhost:{port}?smtp=127.0.0.1&from=autoheal@example.com&to=oncall@example.com&mode=insecure"
    )
    assert notification_test(actor="alice") == 1
    deadline = time.monotonic() + 30
    while not box.messages and time.monotonic() < deadline:
        deliver_all()
        time.sleep(0.1)
    assert box.messages, list(AuditEvent.objects.values_list("message", flat=True))
    assert box.messages[0].rcpt_tos == ["oncall@example.com"]
    assert b"test notification" in box.messages[0].content


def test_the_target_setting_is_parsed_with_commas_inside_urls_and_bad_entries_are_named() -> None:
    targets = parse_targets(
        "a=mailto://u:p@host?to=x@example.com,y@example.com,b[action_failed|incident_escalated]=json://h/p"
    )
    assert [t.name for t in targets] == ["a", "b"]
    assert targets[0].url.endswith("to=x@example.com,y@example.com")
    assert targets[0].events == frozenset(EVENT_NAMES)
    assert targets[1].events == {"action_failed", "incident_escalated"}
    with pytest.raises(NotifyConfigError, match="unknown event 'sometimes'"):
        parse_targets("a[sometimes]=json://h/")
    with pytest.raises(NotifyConfigError) as raised:
        parse_targets("json://secret@host/")
    assert "secret" not in str(raised.value)


def test_the_ops_button_queues_a_test_notification_for_admins_only(
    settings: Any, receiver: JsonReceiver, client: Any
) -> None:
    from django.contrib.auth.models import Group, User

    settings.AUTOHEAL_NOTIFY_URLS = f"chat={receiver.url()}"
    ops = User.objects.create_user(username="olga", password="x-unused-password-1")
    ops.groups.add(Group.objects.get_or_create(name="ops")[0])
    client.force_login(ops)
    assert client.post("/ops/notify-test").status_code == 403
    assert not Notification.objects.exists()
    admin = User.objects.create_user(username="ada", password="x-unused-password-1")
    admin.groups.add(Group.objects.get_or_create(name="admin")[0])
    client.force_login(admin)
    assert client.post("/ops/notify-test").status_code == 302
    deliver_all()
    assert [r["body"]["title"] for r in receiver.received] == ["Autoheal: test notification"]
    assert "ada" in receiver.received[0]["body"]["message"]


def test_every_event_a_target_can_choose_is_sent_once(settings: Any, receiver: JsonReceiver) -> None:
    settings.AUTOHEAL_NOTIFY_URLS = f"all={receiver.url()}"
    start_outbox()
    from audit.services import audit_record
    from notifications.targets import EVENTS

    for kind in EVENTS:
        audit_record(kind=kind, alertname="ContainerUnhealthy", target="web", message=f"a {kind} happened")
    audit_record(kind="alert_received", alertname="ContainerUnhealthy")  # not an event to tell
    deliver_all(max_rounds=50)
    deliver_all(max_rounds=50)  # a second pass finds nothing new: each event is told once
    titles = sorted(r["body"]["title"] for r in receiver.received)
    expected = sorted(f"Autoheal: {name.replace('_', ' ')}: ContainerUnhealthy on web" for name in EVENT_NAMES)
    assert titles == expected
    assert AuditEvent.objects.filter(kind="notification_sent").count() == len(EVENT_NAMES)
