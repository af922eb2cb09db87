"""The sealer on PostgreSQL: writers commit without waiting, the chain is built apart from them.

Every test here commits for real (``transaction=True``) and uses real concurrent connections
(threads and processes), because what is tested is what happens between transactions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections, transaction

from audit.models import AuditEvent, AuditPending
from audit.sealer import audit_seal, audit_seal_all
from audit.selectors import chain_verify
from audit.services import audit_record, audit_record_many
from audit.streams.frames import CHANNEL
from audit.streams.storage import AuditStorage
from observability.tests.helpers import scrape, value

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _sealer_mode(settings: Any, mirror_path: Path) -> Path:
    settings.AUTOHEAL_AUDIT_CHAIN = "sealer"
    return mirror_path


def _env(mirror: Path) -> dict[str, str]:
    db = connection.settings_dict
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_SETTINGS_MODULE": "autoheal_site.settings",
        "AUTOHEAL_AUDIT_CHAIN": "sealer",
        "AUTOHEAL_AUDIT_JSONL": str(mirror),
    }


def _manage_shell(code: str, mirror: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=_env(mirror),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _mirror_ids(mirror: Path) -> list[int]:
    if not mirror.exists():
        return []
    return [json.loads(line)["id"] for line in mirror.read_text().splitlines()]


def _assert_trail_whole(mirror: Path) -> list[AuditEvent]:
    """Chain verifies, nothing pending, mirror equals the table in chain order (ids and hashes)."""
    report = chain_verify()
    assert report.ok, report.problems
    assert AuditPending.objects.count() == 0
    events = list(AuditEvent.objects.order_by("id"))
    lines = [json.loads(line) for line in mirror.read_text().splitlines()] if mirror.exists() else []
    assert [(line["id"], line["hash"]) for line in lines] == [(e.id, e.hash) for e in events]
    return events


def test_writer_commits_to_pending_and_the_sealer_chains_it(mirror_path: Path) -> None:
    audit_record(kind="ack", message="first")
    audit_record_many([{"kind": "ack", "message": "second"}, {"kind": "ack", "message": "third"}])

    assert AuditEvent.objects.count() == 0, "not chained before the sealer runs"
    assert AuditPending.objects.count() == 3

    assert audit_seal() == 3

    events = _assert_trail_whole(mirror_path)
    assert [e.message for e in events] == ["first", "second", "third"]
    assert audit_seal() == 0


def test_events_committed_by_a_process_that_died_before_any_seal_are_chained_later(mirror_path: Path) -> None:
    # The writer process commits and is killed at once (os._exit: no cleanup, no sealer ran).
    result = _manage_shell(
        "import os; from audit.services import audit_record; "
        "[audit_record(kind='alert_received', alertname='Crash', message=f'n{i}') for i in range(5)]; "
        "os._exit(9)",
        mirror_path,
    )
    assert result.returncode == 9, result.stderr
    assert AuditPending.objects.count() == 5
    assert AuditEvent.objects.count() == 0

    assert audit_seal_all() == 5

    events = _assert_trail_whole(mirror_path)
    assert [e.message for e in events] == [f"n{i}" for i in range(5)]


def test_mirror_repairs_a_batch_lost_between_commit_and_mirror(mirror_path: Path) -> None:
    audit_record(kind="ack", message="mirrored")
    assert audit_seal() == 1
    audit_record_many([{"kind": "ack", "message": f"lost {i}"} for i in range(4)])
    result = _manage_shell(
        "import os; from audit import sealer, mirror; "
        "mirror.append_sealed = lambda events: os._exit(9); sealer.audit_seal()",
        mirror_path,
    )
    assert result.returncode == 9, result.stderr
    assert len(_mirror_ids(mirror_path)) == 1

    audit_record(kind="ack", message="next")
    assert audit_seal() == 1

    events = _assert_trail_whole(mirror_path)
    assert [e.message for e in events] == ["mirrored", "lost 0", "lost 1", "lost 2", "lost 3", "next"]


def test_two_sealers_started_at_once_chain_each_event_exactly_once(mirror_path: Path) -> None:
    audit_record_many([{"kind": "alert_received", "alertname": "Storm", "message": f"m{i}"} for i in range(3000)])
    barrier = threading.Barrier(2)
    sealed: list[int] = []
    errors: list[BaseException] = []

    def seal() -> None:
        try:
            barrier.wait()
            sealed.append(audit_seal_all(limit=250, wait=30))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=seal) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert not errors
    assert sum(sealed) == 3000
    events = _assert_trail_whole(mirror_path)
    assert sorted(e.message for e in events) == sorted(f"m{i}" for i in range(3000))
    ids = [e.id for e in events]
    assert ids == sorted(ids)


def test_a_rolled_back_writer_leaves_no_event_and_no_hole_in_the_stream(mirror_path: Path) -> None:
    holding = threading.Event()
    release = threading.Event()

    def doomed_writer() -> None:
        try:
            with transaction.atomic():
                audit_record(kind="ack", message="rolled back")
                holding.set()  # its pending id is taken, its row invisible to others
                release.wait(30)
                raise RuntimeError("abort")
        except RuntimeError:
            pass
        finally:
            connections.close_all()

    thread = threading.Thread(target=doomed_writer)
    thread.start()
    assert holding.wait(30)
    audit_record(kind="ack", message="kept 1")
    assert audit_seal() == 1
    release.set()
    thread.join(30)
    audit_record(kind="ack", message="kept 2")
    assert audit_seal() == 1

    events = _assert_trail_whole(mirror_path)
    assert [e.message for e in events] == ["kept 1", "kept 2"]
    # The stream replays by id: no gap, and Last-Event-ID replay from the first gives exactly the second.
    assert events[1].id == events[0].id + 1
    replay = AuditStorage().get_events(CHANNEL, events[0].id)
    assert [e.data["message"] for e in replay] == ["kept 2"]


def test_a_writer_that_commits_long_after_a_later_writer_joins_the_chain_after_it(mirror_path: Path) -> None:
    holding = threading.Event()
    release = threading.Event()

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                audit_record(kind="ack", message="slow, started first")
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert holding.wait(30)
    audit_record(kind="ack", message="fast, started second")
    assert audit_seal() == 1
    stream_position = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    release.set()
    thread.join(30)
    assert audit_seal() == 1

    events = _assert_trail_whole(mirror_path)
    assert [e.message for e in events] == ["fast, started second", "slow, started first"]
    assert events[1].ts >= events[0].ts, "timestamps never go backwards along the chain"
    # A client that had seen the first event gets the late one next, not lost behind it.
    replay = AuditStorage().get_events(CHANNEL, stream_position or 0)
    assert [e.data["message"] for e in replay] == ["slow, started first"]


def test_a_large_backlog_after_an_outage_is_sealed_whole_and_counted(mirror_path: Path, client: Any) -> None:
    for start in range(0, 20000, 5000):
        audit_record_many(
            [{"kind": "alert_received", "alertname": "Backlog", "message": f"b{i}"} for i in range(start, start + 5000)]
        )
    assert AuditPending.objects.count() == 20000

    assert audit_seal_all(limit=2000) == 20000

    events = _assert_trail_whole(mirror_path)
    assert [e.message for e in events] == [f"b{i}" for i in range(20000)]
    assert value(scrape(client), "autoheal_event_total", kind="alert_received") == 20000


def test_verify_detects_tampering_with_sealed_events(mirror_path: Path) -> None:
    audit_record_many([{"kind": "ack", "message": f"e{i}"} for i in range(5)])
    audit_seal()
    table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET message = 'edited' WHERE message = 'e2'")  # noqa: S608
    report = chain_verify()
    assert not report.ok
    assert {p["problem"] for p in report.problems} == {"altered"}


def test_a_running_worker_seals_events_written_by_other_processes_and_its_own(mirror_path: Path) -> None:
    from remediation.models import Job
    from remediation.tests.exec_helpers import make_alert, make_job, make_policy, spawn_manage, stop_process

    worker = spawn_manage(
        ["autoheal_worker", "--name", "sealer-test"],
        env={"AUTOHEAL_AUDIT_CHAIN": "sealer", "AUTOHEAL_AUDIT_JSONL": str(mirror_path)},
    )
    try:
        policy = make_policy(action="log_only")
        jobs = [make_job(policy=policy, alert=make_alert()) for _ in range(5)]
        audit_record(kind="ack", message="written by this process")
        from remediation import wakeup

        wakeup.notify_jobs()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = Job.objects.filter(pk__in=[j.pk for j in jobs], state=Job.State.OK).count()
            if done == 5 and not AuditPending.objects.exists():
                break
            time.sleep(0.1)
    finally:
        assert stop_process(worker) == 0
    events = _assert_trail_whole(mirror_path)
    kinds = [e.kind for e in events]
    assert kinds.count("action_started") == 5
    assert kinds.count("action_ok") == 5
    assert "written by this process" in [e.message for e in events]


def test_verify_detects_a_sealed_event_deleted_from_the_middle(mirror_path: Path) -> None:
    audit_record_many([{"kind": "ack", "message": f"e{i}"} for i in range(5)])
    audit_seal()
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {AuditEvent._meta.db_table} WHERE message = 'e2'")  # noqa: S608
    report = chain_verify()
    assert not report.ok
    assert {p["problem"] for p in report.problems} == {"missing"}


def test_a_mirror_from_another_history_is_appended_to_not_repaired(mirror_path: Path) -> None:
    # A mirror whose last line the table does not hold (a restored database): the new batch is
    # appended as it is, nothing is skipped or copied in from the table.
    mirror_path.write_text(json.dumps({"id": 999, "hash": "f" * 64, "kind": "ack"}) + "\n")
    audit_record(kind="ack", message="fresh")
    assert audit_seal() == 1
    ids = _mirror_ids(mirror_path)
    assert ids == [999, AuditEvent.objects.get(message="fresh").id]


def test_an_unsealed_event_is_not_in_the_audit_api_until_it_is_chained(mirror_path: Path, ops_client: Any) -> None:
    audit_record(kind="ack", message="waiting for the sealer")

    before = ops_client.get("/audit", {"kind": "ack"})
    assert before.status_code == 200
    assert before.json()["events"] == []

    assert audit_seal() == 1
    after = ops_client.get("/audit", {"kind": "ack"}).json()["events"]
    assert [e["message"] for e in after] == ["waiting for the sealer"]
    assert after[0]["id"] == AuditEvent.objects.get().id


@pytest.mark.redis
def test_each_event_is_encoded_once_for_the_table_the_mirror_and_the_stream(
    mirror_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sealer encodes an event once and reuses the text: what lands in the table, the mirror
    and the stream must equal what a fresh encoding of the stored row gives."""
    import redis

    from audit.mirror import line_for
    from audit.streams import publish
    from audit.streams.feed import redis_channel

    settings.REDIS_URL = os.environ["AUTOHEAL_TEST_REDIS_URL"]
    monkeypatch.setattr(publish, "_publisher", None)
    subscriber = redis.Redis.from_url(settings.REDIS_URL).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(redis_channel())
    subscriber.get_message(timeout=5)  # the subscription's confirmation
    tricky = {
        "labels": {"quote": 'a "b" \\ c', "text": "äöü 日本 \u2028 \x7f end"},
        "nested": {"b": [1, 2.5, None, True], "a": {}},
    }
    stamp = datetime(2026, 12, 3, 8, 0, 0, 123456, tzinfo=UTC)
    try:
        audit_record_many(
            [
                {"kind": "ack", "message": "line\u2029break", "data": tricky, "ts": stamp},
                {"kind": "alert_received", "alertname": "Ärger", "target": "t", "data": {}},
            ]
        )
        assert audit_seal() == 2

        events = _assert_trail_whole(mirror_path)
        assert (events[0].data, events[0].ts, events[0].message) == (tricky, stamp, "line\u2029break")
        assert events[1].alertname == "Ärger"
        # Read back from the table, the events carry no cached text: line_for encodes them afresh.
        assert mirror_path.read_text(encoding="utf-8") == "".join(line_for(event) for event in events)
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = subscriber.get_message(timeout=0.5)
        assert message is not None, "the sealed batch reached the stream"
        assert json.loads(message["data"])["events"] == [event.as_dict() for event in events]
    finally:
        subscriber.close()
