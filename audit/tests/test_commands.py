"""audit_verify, audit_export, audit_import and audit_prune as an operator runs them."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import AuditAnchor, AuditEvent, AuditExport
from audit.services import audit_record

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def verify_problems() -> str:
    with pytest.raises(CommandError, match="NOT intact") as caught:
        run("audit_verify")
    return str(caught.value)


def verify_output() -> str:
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("audit_verify", stdout=out)
    return out.getvalue()


def sql(statement: str, params: list[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def event_ids() -> list[int]:
    return list(AuditEvent.objects.order_by("id").values_list("id", flat=True))


# --- audit_verify ----------------------------------------------------------------------------


def test_verify_passes_on_an_intact_trail(trail: dict[str, Any]) -> None:
    assert "intact: 11 events" in run("audit_verify")


def test_verify_catches_an_edited_row(trail: dict[str, Any]) -> None:
    target = event_ids()[4]
    sql("UPDATE audit_auditevent SET message = 'nothing happened' WHERE id = %s", [target])
    verify_problems()
    assert f"altered: event {target}:" in verify_output()


def test_verify_catches_an_edited_row_whose_hash_was_recomputed(trail: dict[str, Any]) -> None:
    target = event_ids()[4]
    sql("UPDATE audit_auditevent SET data = '{}'::jsonb, hash = repeat('a', 64) WHERE id = %s", [target])
    output = verify_output()
    assert f"altered: event {target}:" in output
    assert f"missing: event {event_ids()[5]}:" in output


def test_verify_catches_a_deleted_row(trail: dict[str, Any]) -> None:
    ids = event_ids()
    sql("DELETE FROM audit_auditevent WHERE id = %s", [ids[6]])
    output = verify_output()
    assert f"missing: event {ids[7]}: the event it follows is not there" in output
    assert "altered" not in output


def test_verify_catches_deleted_oldest_rows_without_a_prune_anchor(trail: dict[str, Any]) -> None:
    ids = event_ids()
    sql("DELETE FROM audit_auditevent WHERE id <= %s", [ids[1]])
    assert f"missing: event {ids[2]}: events before it are missing" in verify_output()


def test_verify_catches_reordered_rows(trail: dict[str, Any]) -> None:
    ids = event_ids()
    a, b = ids[3], ids[4]
    # Swap two events' positions in the chain (their ids), through a free id.
    sql("UPDATE audit_auditevent SET id = %s WHERE id = %s", [10**9, a])
    sql("UPDATE audit_auditevent SET id = %s WHERE id = %s", [a, b])
    sql("UPDATE audit_auditevent SET id = %s WHERE id = %s", [b, 10**9])
    output = verify_output()
    assert f"reordered: event {a}:" in output
    assert f"reordered: event {b}:" in output
    assert "altered" not in output


def test_verify_notices_events_missing_from_the_end_after_an_export(trail: dict[str, Any], tmp_path: Path) -> None:
    run("audit_export", "--output", str(tmp_path / "all.jsonl"))
    sql("DELETE FROM audit_auditevent WHERE id = %s", [event_ids()[-1]])
    assert "truncated" in verify_output()


# --- audit_export / audit_import -------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_writes_every_event_oldest_first_with_hashes(trail: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    run("audit_export", "--output", str(path))
    exported = read_jsonl(path)
    assert [e["id"] for e in exported] == event_ids()
    assert all(len(e["hash"]) == 64 and len(e["prev_hash"]) == 64 for e in exported)
    assert AuditExport.objects.get().through_id == event_ids()[-1]


def test_export_takes_the_api_filters_and_a_filtered_export_does_not_count_for_prune(
    trail: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "cpu.jsonl"
    run("audit_export", "--output", str(path), "--alertname", "HighCPU", "--kind", "alert_received", "--since", "2h")
    assert len(read_jsonl(path)) == 4
    assert not AuditExport.objects.exists()


def test_export_to_standard_output(trail: dict[str, Any]) -> None:
    out = run("audit_export", "--contains", "severity=critical")
    assert [json.loads(line)["alertname"] for line in out.splitlines()] == ["DiskFull"] * 3


def test_export_with_progress_reports_on_stderr(trail: dict[str, Any], tmp_path: Path) -> None:
    err = io.StringIO()
    call_command("audit_export", "--output", str(tmp_path / "a.jsonl"), "--progress", stdout=io.StringIO(), stderr=err)
    assert "exported 11 events" in err.getvalue()


def test_export_refuses_a_bad_filter_naming_it(trail: dict[str, Any]) -> None:
    with pytest.raises(CommandError, match="--kind"):
        run("audit_export", "--kind", "reboot")
    with pytest.raises(CommandError, match="--since"):
        run("audit_export", "--since", "last week")


def test_export_prune_import_round_trips_to_the_same_verified_trail(trail: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "backup.jsonl"
    run("audit_export", "--output", str(path))
    before = [e.as_dict() | {"hash": e.hash, "prev_hash": e.prev_hash} for e in AuditEvent.objects.order_by("id")]
    assert "removed 11 events" in run("audit_prune", "--older-than", "1s")
    assert not AuditEvent.objects.exists()
    assert "11 added, 0 already present" in run("audit_import", str(path))
    after = [e.as_dict() | {"hash": e.hash, "prev_hash": e.prev_hash} for e in AuditEvent.objects.order_by("id")]
    assert after == before
    assert "intact: 11 events" in run("audit_verify")
    # New events continue the chain after the imported ids.
    new = audit_record(kind="ack", message="after restore")
    assert new.id > before[-1]["id"]
    assert new.prev_hash == before[-1]["hash"]
    assert "intact: 12 events" in run("audit_verify")


def test_importing_the_same_file_twice_adds_nothing(trail: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "backup.jsonl"
    run("audit_export", "--output", str(path))
    assert "0 added, 11 already present" in run("audit_import", str(path))
    assert AuditEvent.objects.count() == 11


def rewrite(path: Path, number: int, change: Any) -> None:
    rows = path.read_text(encoding="utf-8").splitlines()
    rows[number] = change(rows[number])
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda line: line[:-5], "line 5: not JSON"),
        (lambda line: "[1, 2]", "line 5: not a JSON object"),
        (lambda line: line.replace('"kind":"action_ok"', '"kind":"reboot"'), "line 5: unknown kind"),
        (lambda line: line.replace('"command ok"', '"nothing happened"'), "line 5: hash does not match"),
        (lambda line: json.dumps({k: v for k, v in json.loads(line).items() if k != "hash"}), "line 5: missing hash"),
        (lambda line: line.replace('"ts":"', '"ts":"yesterday'), "line 5: ts must be"),
    ],
)
def test_a_bad_line_imports_nothing_and_says_which(
    trail: dict[str, Any], tmp_path: Path, change: Any, message: str
) -> None:
    path = tmp_path / "backup.jsonl"
    run("audit_export", "--output", str(path))
    run("audit_prune", "--older-than", "1s")
    rewrite(path, 4, change)
    with pytest.raises(CommandError, match=message):
        run("audit_import", str(path))
    assert not AuditEvent.objects.exists()


def test_import_refuses_an_id_that_exists_with_other_content(trail: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "backup.jsonl"
    run("audit_export", "--output", str(path))
    sql("UPDATE audit_auditevent SET message = 'changed', hash = repeat('b', 64) WHERE id = %s", [event_ids()[2]])
    with pytest.raises(CommandError, match=f"event id {event_ids()[2]} already exists with different content"):
        run("audit_import", str(path))


def test_import_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot read"):
        run("audit_import", str(tmp_path / "nope.jsonl"))


# --- audit_prune -----------------------------------------------------------------------------


def test_prune_refuses_events_that_were_never_exported(trail: dict[str, Any]) -> None:
    with pytest.raises(CommandError, match=r"5 events up to id .* a complete export only covers events up to id 0"):
        run("audit_prune", "--older-than", "1d")
    assert AuditEvent.objects.count() == 11


def test_prune_removes_only_exported_old_events_and_the_chain_still_verifies(
    trail: dict[str, Any], tmp_path: Path
) -> None:
    run("audit_export", "--output", str(tmp_path / "all.jsonl"))
    audit_record(kind="ack", message="after the export")
    output = run("audit_prune", "--older-than", "1d")
    assert "removed 5 events" in output
    assert AuditEvent.objects.count() == 7
    assert not AuditEvent.objects.filter(alertname="DiskFull").exists()
    anchor = AuditAnchor.objects.get()
    assert anchor.removed == 5 and not anchor.forced
    assert "intact: 7 events" in run("audit_verify")


def test_prune_force_removes_unexported_events_and_says_so(trail: dict[str, Any]) -> None:
    output = run("audit_prune", "--older-than", "1d", "--force")
    assert "removed 5 events" in output and "forced" in output
    assert AuditEvent.objects.count() == 6
    assert "intact: 6 events" in run("audit_verify")


def test_prune_dry_run_removes_nothing(trail: dict[str, Any]) -> None:
    assert "would remove 5 events" in run("audit_prune", "--older-than", "1d", "--force", "--dry-run")
    assert AuditEvent.objects.count() == 11


def test_prune_with_nothing_old_enough(trail: dict[str, Any]) -> None:
    assert "nothing to prune" in run("audit_prune", "--older-than", "30d")


@pytest.mark.parametrize("value", ["90", "ninety days", "0d"])
def test_prune_refuses_a_bad_duration(trail: dict[str, Any], value: str) -> None:
    with pytest.raises(CommandError, match="--older-than"):
        run("audit_prune", "--older-than", value)
    assert AuditEvent.objects.count() == 11


def test_import_refuses_timestamps_going_backwards(trail: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "backup.jsonl"
    run("audit_export", "--output", str(path))
    run("audit_prune", "--older-than", "1s")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    # Re-seal a chain whose third event claims to be older than the second.
    from audit.services import GENESIS_HASH, HASHED_FIELDS, body_hash

    rows[2]["ts"] = "2001-01-01T00:00:00Z"
    prev = GENESIS_HASH
    for row in rows:
        row["prev_hash"] = prev
        row["hash"] = prev = body_hash(prev, {name: row[name] for name in HASHED_FIELDS})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(CommandError, match="must not go backwards"):
        run("audit_import", str(path))
    assert not AuditEvent.objects.exists()


def test_prune_boundary_follows_the_cutoff(trail: dict[str, Any], tmp_path: Path) -> None:
    run("audit_export", "--output", str(tmp_path / "all.jsonl"))
    run("audit_prune", "--older-than", "30h")
    remaining = AuditEvent.objects.order_by("id").first()
    assert remaining is not None and remaining.ts >= trail["now"] - timedelta(hours=30)
    assert AuditEvent.objects.count() == 6


def test_verify_lists_a_bounded_number_of_problems_and_counts_the_rest(
    trail: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit import selectors

    monkeypatch.setattr(selectors, "MAX_REPORTED", 2)
    sql("UPDATE audit_auditevent SET message = message || %s", ["!"])
    output = verify_output()
    assert output.count("altered: event") == 2
    assert "... and 9 more problem(s) not listed" in output
    with pytest.raises(CommandError, match="11 problem"):
        run("audit_verify")
