"""audit_record: one writer, append-only rows, a JSONL mirror that holds only committed events."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from audit.models import AppendOnlyError, AuditEvent
from audit.services import audit_record, audit_record_many

pytestmark = [pytest.mark.postgres]


def lines(path: Any) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.django_db(transaction=True)
def test_an_event_rolled_back_leaves_no_row_and_no_mirror_line(mirror_path: Any) -> None:
    audit_record(kind="ack", actor="bob", message="kept")
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(kind="action_started", target="web-1", message="never happened")
        raise RuntimeError("the action's transaction fails")
    assert list(AuditEvent.objects.values_list("message", flat=True)) == ["kept"]
    assert [line["message"] for line in lines(mirror_path)] == ["kept"]


@pytest.mark.django_db(transaction=True)
def test_the_mirror_line_appears_only_after_commit(mirror_path: Any) -> None:
    with transaction.atomic():
        audit_record(kind="alert_received", alertname="DiskFull", message="firing")
        assert lines(mirror_path) == []
    [line] = lines(mirror_path)
    event = AuditEvent.objects.get()
    assert line == {**event.as_dict(), "prev_hash": event.prev_hash, "hash": event.hash}


@pytest.mark.django_db(transaction=True)
def test_the_mirror_survives_logrotate_create_and_copytruncate(mirror_path: Any) -> None:
    audit_record(kind="ack", message="before rotation")
    # logrotate "create": the file is renamed away; the next event starts a new file.
    rotated = str(mirror_path) + ".1"
    os.rename(mirror_path, rotated)
    audit_record(kind="ack", message="after create rotation")
    assert [line["message"] for line in lines(rotated)] == ["before rotation"]
    assert [line["message"] for line in lines(mirror_path)] == ["after create rotation"]
    # logrotate "copytruncate": the file is copied and truncated in place.
    with open(mirror_path, "r+", encoding="utf-8") as handle:
        handle.truncate(0)
    audit_record(kind="ack", message="after copytruncate")
    raw = mirror_path.read_bytes()
    assert b"\x00" not in raw
    assert [line["message"] for line in lines(mirror_path)] == ["after copytruncate"]


@pytest.mark.django_db(transaction=True)
def test_a_batch_is_one_chain_and_one_mirror_write(mirror_path: Any) -> None:
    events = audit_record_many(
        [{"kind": "alert_received", "alertname": f"A{i}", "data": {"labels": {"n": str(i)}}} for i in range(5)]
    )
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert [line["id"] for line in lines(mirror_path)] == [e.id for e in events]


@pytest.mark.django_db
def test_events_cannot_be_changed_or_deleted_by_application_code(mirror_path: Any) -> None:
    event = audit_record(kind="ack", message="original")
    event.message = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(id=event.id).update(message="rewritten")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(id=event.id).delete()
    assert AuditEvent.objects.get(id=event.id).message == "original"


@pytest.mark.django_db
def test_timestamps_never_go_backwards_along_the_chain(mirror_path: Any) -> None:
    now = timezone.now()
    first = audit_record(kind="ack", ts=now)
    earlier = audit_record(kind="ack", ts=now - timedelta(hours=1))
    assert earlier.id > first.id
    assert earlier.ts == first.ts


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"kind": "restarted"}, "unknown audit kind"),
        ({"kind": "ack", "data": ["not", "a", "dict"]}, "JSON object"),
        ({"kind": "ack", "ts": timezone.now().replace(tzinfo=None)}, "timezone-aware"),
    ],
)
def test_a_bad_event_is_refused_and_nothing_is_written(mirror_path: Any, item: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        audit_record_many([item])
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_long_fields_are_cut_to_their_columns_before_hashing(mirror_path: Any) -> None:
    event = audit_record(kind="ack", target="t" * 400, message="m" * 20000)
    stored = AuditEvent.objects.get(id=event.id)
    assert len(stored.target) == 255 and len(stored.message) == 10000
    assert stored.hash == event.hash


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_build_one_intact_chain(mirror_path: Any) -> None:
    import threading

    from django.db import connection

    from audit.selectors import chain_verify

    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for i in range(15):
                if i % 5 == 0:
                    audit_record_many([{"kind": "alert_received", "alertname": f"W{worker}", "message": f"{i}"}] * 3)
                else:
                    audit_record(kind="action_ok", target=f"w{worker}", message=f"{i}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    report = chain_verify()
    assert report.ok, report.problems
    assert report.checked == AuditEvent.objects.count() == 4 * (12 + 3 * 3)
    assert sorted(line["id"] for line in lines(mirror_path)) == sorted(AuditEvent.objects.values_list("id", flat=True))
