"""GET /events end to end: a real daphne web process, a separate writer process, PostgreSQL, Redis.

The web server's per-client queue is set to 4 events, so bursts overflow it and the catch-up from
the audit table is exercised by every test, not only the one that is about it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.live_stream_support import LiveWeb, SSEClient, live_web, ops_user, session_cookie, sse_clients

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def web(django_db_setup: Any, django_db_blocker: Any) -> Iterator[LiveWeb]:
    with (
        django_db_blocker.unblock(),
        live_web(
            AUTOHEAL_STREAM_MAX_PENDING="4",
            AUTOHEAL_STREAM_KEEPALIVE_SECONDS="1",
            AUTOHEAL_RATE_LIMIT="100000/60s",
            AUTOHEAL_LOG_LEVEL="INFO",
            # No poll during these tests: every event must come through the Redis doorbell or a
            # read the doorbells triggered, not through the safety net.
            AUTOHEAL_STREAM_POLL_SECONDS="3600",
        ) as server,
    ):
        yield server


@pytest.fixture
def sse() -> Iterator[Callable[..., SSEClient]]:
    yield from sse_clients()


@pytest.fixture
def cookie() -> str:
    return session_cookie(ops_user())


def event(kind: str = "ack", alertname: str = "DiskFull", message: str = "", **extra: Any) -> dict[str, Any]:
    return {"event": {"kind": kind, "alertname": alertname, "message": message, **extra}}


def test_event_committed_by_another_process_arrives_in_the_contract_format(web: LiveWeb, cookie: str, sse: Any) -> None:
    stream = sse(web.url("/events"), cookie=cookie)
    assert stream.response.status_code == 200
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    stream.wait_for("stream-open")

    [written] = web.write([event("action_ok", "ContainerUnhealthy", "restarted web-1", target="web-1")])

    [frame] = stream.audit_events(1)
    assert frame.event == "audit"
    assert frame.id == str(written)
    from audit.models import AuditEvent

    assert frame.json() == AuditEvent.objects.get(id=written).as_dict()


def test_kind_and_alertname_filters_deliver_only_matching_events(web: LiveWeb, cookie: str, sse: Any) -> None:
    by_kind = sse(web.url("/events?kind=action_ok,action_fail"), cookie=cookie)
    by_name = sse(web.url("/events?alertname=DiskFull"), cookie=cookie)
    both = sse(web.url("/events?kind=action_fail&alertname=DiskFull"), cookie=cookie)
    for stream in (by_kind, by_name, both):
        stream.wait_for("stream-open")

    ids = web.write(
        [
            event("alert_received", "DiskFull"),
            event("action_ok", "ContainerUnhealthy"),
            event("action_fail", "DiskFull"),
            event("ack", "ContainerUnhealthy"),
            event("action_fail", "ContainerUnhealthy"),
            event("ack", "DiskFull"),
        ]
    )

    assert [int(f.id) for f in by_kind.audit_events(3)] == [ids[1], ids[2], ids[4]]
    assert [int(f.id) for f in by_name.audit_events(3)] == [ids[0], ids[2], ids[5]]
    assert [int(f.id) for f in both.audit_events(1)] == [ids[2]]
    # A marker event that every filter matches proves nothing else was queued before it.
    [marker] = web.write([event("action_fail", "DiskFull", "marker")])
    for stream in (by_kind, by_name, both):
        assert [int(f.id) for f in stream.audit_events(1)] == [marker]


def test_reconnect_with_last_event_id_receives_exactly_the_missed_events(web: LiveWeb, cookie: str, sse: Any) -> None:
    first = sse(web.url("/events"), cookie=cookie)
    first.wait_for("stream-open")
    seen = web.write([event(message=f"before {i}") for i in range(3)])
    received = first.audit_events(3)
    assert [int(f.id) for f in received] == seen
    first.close()

    missed = web.write([event(message=f"while away {i}") for i in range(7)])

    again = sse(web.url("/events"), cookie=cookie, headers={"Last-Event-ID": received[-1].id})
    replayed = again.audit_events(7)
    assert [int(f.id) for f in replayed] == missed
    assert [f.json()["message"] for f in replayed] == [f"while away {i}" for i in range(7)]

    [live] = web.write([event(message="after reconnect")])
    [next_frame] = again.audit_events(1)
    assert int(next_frame.id) == live  # no duplicate of the replayed ones before it


def test_idle_stream_sends_keep_alives(web: LiveWeb, cookie: str, sse: Any) -> None:
    stream = sse(web.url("/events"), cookie=cookie)
    stream.wait_for("stream-open")

    assert stream.wait_for("keep-alive").data == ""


def test_rolled_back_event_is_never_streamed(web: LiveWeb, cookie: str, sse: Any) -> None:
    stream = sse(web.url("/events"), cookie=cookie)
    stream.wait_for("stream-open")

    ids = web.write([{"rollback": True, "event": event(message="rolled back")["event"]}, event(message="kept")])

    [frame] = stream.audit_events(1)
    assert int(frame.id) == ids[0]
    assert frame.json()["message"] == "kept"


def test_client_that_falls_behind_catches_up_from_the_audit_without_loss(web: LiveWeb, cookie: str, sse: Any) -> None:
    stream = sse(web.url("/events"), cookie=cookie)
    stream.wait_for("stream-open")

    # 300 events in one transaction arrive at once: far more than the 4 the server queues per
    # client. The client must get every one, once, in order.
    ids = web.write([{"batch": [{"kind": "ack", "alertname": "Burst", "message": str(i)} for i in range(300)]}])

    frames = stream.audit_events(300, timeout=60)
    assert [int(f.id) for f in frames] == ids
    assert "fell behind; catching up from the audit" in web.log.read_text()
    [after] = web.write([event(message="after the burst")])
    assert [int(f.id) for f in stream.audit_events(1)] == [after]


def test_resuming_from_an_event_no_longer_kept_is_told_to_reset(web: LiveWeb, cookie: str, sse: Any) -> None:
    [current] = web.write([event(message="latest")])

    stream = sse(web.url("/events"), cookie=cookie, headers={"Last-Event-ID": str(current + 1000)})
    [reset] = stream.audit_events(1)

    assert reset.event == "stream-reset"
    assert reset.id == str(current)
    [live] = web.write([event(message="live after reset")])
    assert [int(f.id) for f in stream.audit_events(1)] == [live]


def test_anonymous_and_users_without_a_role_are_refused_ops_and_admin_allowed(web: LiveWeb, sse: Any) -> None:
    import httpx

    anonymous = httpx.get(web.url("/events"), timeout=10)
    assert anonymous.status_code == 401
    assert "stream-error" in anonymous.text

    nobody = session_cookie(ops_user("nobody", role=None))
    refused = httpx.get(web.url("/events"), headers={"Cookie": f"sessionid={nobody}"}, timeout=10)
    assert refused.status_code == 403

    for name, role in (("ops-user", "ops"), ("admin-user", "admin")):
        stream = sse(web.url("/events"), cookie=session_cookie(ops_user(name, role=role)))
        assert stream.response.status_code == 200
        stream.wait_for("stream-open")


@pytest.mark.parametrize(
    ("query", "headers", "parameter"),
    [
        ("?kind=not_a_kind", {}, "kind"),
        ("?alertname=" + "x" * 201, {}, "alertname"),
        ("", {"Last-Event-ID": "audit:12"}, "Last-Event-ID"),
    ],
)
def test_bad_filter_or_position_is_a_400_naming_it(
    web: LiveWeb, cookie: str, query: str, headers: dict[str, str], parameter: str
) -> None:
    import httpx

    answer = httpx.get(web.url("/events" + query), headers={"Cookie": f"sessionid={cookie}", **headers}, timeout=10)

    assert answer.status_code == 400
    assert parameter in answer.text


def test_open_streams_do_not_each_hold_a_database_connection(web: LiveWeb, cookie: str, sse: Any) -> None:
    from django.db import connection

    def server_connections() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return int(cursor.fetchone()[0])

    before = server_connections()
    streams = [sse(web.url("/events"), cookie=cookie) for _ in range(8)]
    for stream in streams:
        stream.wait_for("stream-open")
    [written] = web.write([event(message="to every stream")])
    for stream in streams:
        assert [int(f.id) for f in stream.audit_events(1)] == [written]

    # Hundreds of consoles must not use up PostgreSQL's connections: streams hold none.
    assert server_connections() <= before + 1


def test_without_redis_events_from_another_process_still_arrive_in_order(cookie: str, sse: Any) -> None:
    # The embedded mode: no pub/sub between processes; the stream finds the worker's events by
    # polling the audit table.
    with live_web(REDIS_URL="", AUTOHEAL_STREAM_KEEPALIVE_SECONDS="1") as plain:
        stream = sse(plain.url("/events"), cookie=cookie)
        stream.wait_for("stream-open")

        ids = plain.write([event(message=f"no redis {i}") for i in range(5)])

        assert [int(f.id) for f in stream.audit_events(5)] == ids


def test_without_redis_events_written_by_the_web_process_itself_arrive_at_once(
    cookie: str, sse: Any, fixture_body: Any
) -> None:
    import httpx

    from audit.models import AuditEvent

    # No Redis and no poll: only the in-process hand-over can deliver these.
    with live_web(
        REDIS_URL="",
        AUTOHEAL_STREAM_POLL_SECONDS="3600",
        AUTOHEAL_WEBHOOK_TOKENS="stream-test-token",
        AUTOHEAL_RATE_LIMIT="100000/60s",
        AUTOHEAL_WEBHOOK_RATE_LIMIT="100000/60s",
    ) as plain:
        stream = sse(plain.url("/events"), cookie=cookie)
        stream.wait_for("stream-open")

        answer = httpx.post(
            plain.url("/alert"),
            content=fixture_body("single-firing.json"),
            headers={"Authorization": "Bearer stream-test-token", "Content-Type": "application/json"},
            timeout=10,
        )
        assert answer.status_code == 202

        written = list(AuditEvent.objects.order_by("id").values_list("id", flat=True))
        assert written
        assert [int(f.id) for f in stream.audit_events(len(written))] == written
