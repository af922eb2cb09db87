"""The restore drill: back up, wipe, restore, the audit chain verifies and every count is the same."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_record, audit_record_many
from operations.backup import MANIFEST
from remediation.models import Alert, Job, Policy

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def mirror(settings, tmp_path: Path) -> Path:
    path = tmp_path / "live" / "audit.jsonl"
    settings.AUTOHEAL_AUDIT_JSONL = str(path)
    return path


def populate() -> None:
    """A small but realistic history: policies, incidents, jobs, and their audit trail."""
    now = timezone.now()
    policy = Policy.objects.create(
        name="restart-unhealthy",
        matchers=['alertname="ContainerUnhealthy"'],
        action="restart_container",
        params={"allow": ["web-*"]},
    )
    Policy.objects.create(name="log-everything", matchers=['severity=~".+"'], action="log_only", priority=900)
    for i in range(5):
        alert = Alert.objects.create(
            fingerprint=f"{i:016x}",
            starts_at=now - timedelta(minutes=i, microseconds=123457),
            alertname="ContainerUnhealthy",
            labels={"alertname": "ContainerUnhealthy", "container": f"web-{i}", "note": "ünïcode & <tags>"},
        )
        job = Job.objects.create(
            policy=policy, policy_name=policy.name, alert=alert, action=policy.action, target=f"web-{i}"
        )
        audit_record_many(
            [
                {"kind": "alert_received", "alertname": alert.alertname, "fingerprint": alert.fingerprint},
                {"kind": "action_queued", "alertname": alert.alertname, "target": job.target, "data": {"job": job.pk}},
                {"kind": "action_dry_run", "alertname": alert.alertname, "target": job.target, "policy": policy.name},
            ]
        )
    audit_record(kind="switch_changed", actor="alice", message="dry run on", data={"dry_run": True})


def counts() -> dict[str, int]:
    return {
        "policies": Policy.objects.count(),
        "alerts": Alert.objects.count(),
        "jobs": Job.objects.count(),
        "audit": AuditEvent.objects.count(),
    }


def assert_chain_verifies() -> None:
    """manage.py audit_verify finds the trail intact (it raises CommandError on any problem)."""
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert f"audit trail intact: {AuditEvent.objects.count()} events" in out.getvalue()


def wipe_database() -> None:
    """The disaster: every table, sequence and extension of the schema is gone."""
    with connection.cursor() as cursor:
        cursor.execute("DROP SCHEMA public CASCADE")
        cursor.execute("CREATE SCHEMA public")


@pytest.mark.parametrize("db_format", ["auto", "json"], ids=["pg_dump", "portable"])
def test_restore_drill_brings_back_every_row_and_a_verifiable_audit_chain(db_format, mirror, tmp_path):
    populate()
    before = counts()
    mirror_before = mirror.read_bytes()
    first_ids = list(AuditEvent.objects.order_by("id").values_list("id", "hash"))
    assert before["audit"] == 16 and mirror_before.count(b"\n") == 16
    backup = tmp_path / "backup"

    out = StringIO()
    call_command("autoheal_backup", "--output", str(backup), "--db-format", db_format, "--prometheus", "", stdout=out)
    manifest = json.loads((backup / MANIFEST).read_text())
    assert manifest["database"]["format"] == ("pg_dump" if db_format == "auto" else "jsonl")
    assert manifest["database"]["counts"]["audit.auditevent"] == 16
    assert "pg_dump" in out.getvalue() if db_format == "auto" else "portable" in out.getvalue()

    wipe_database()
    mirror.unlink()

    call_command("autoheal_restore", "--input", str(backup), stdout=StringIO())
    assert counts() == before
    assert list(AuditEvent.objects.order_by("id").values_list("id", "hash")) == first_ids
    assert mirror.read_bytes() == mirror_before
    assert_chain_verifies()
    # New events continue the chain and the id sequence after the restored ones.
    event = audit_record(kind="ack", actor="bob", message="after the restore")
    assert event.id > first_ids[-1][0]
    assert_chain_verifies()


def test_restore_refuses_a_damaged_backup_and_changes_nothing(mirror, tmp_path):
    populate()
    backup = tmp_path / "backup"
    call_command("autoheal_backup", "--output", str(backup), "--prometheus", "", stdout=StringIO())
    audit_record(kind="ack", actor="bob", message="written after the backup")
    before = counts()
    dump = backup / manifest_db_file(backup)
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))

    with pytest.raises(CommandError, match="checksum mismatch"):
        call_command("autoheal_restore", "--input", str(backup), "--force", stdout=StringIO())
    assert counts() == before


def test_restore_will_not_replace_a_database_that_holds_data_without_force(mirror, tmp_path):
    populate()
    backup = tmp_path / "backup"
    call_command("autoheal_backup", "--output", str(backup), "--prometheus", "", stdout=StringIO())
    audit_record(kind="ack", actor="bob", message="written after the backup")
    with pytest.raises(CommandError, match=r"already holds data.*--force"):
        call_command("autoheal_restore", "--input", str(backup), stdout=StringIO())
    assert AuditEvent.objects.count() == 17

    # With --force the newer event is gone, and the mirror that had it is kept aside.
    call_command("autoheal_restore", "--input", str(backup), "--force", stdout=StringIO())
    assert AuditEvent.objects.count() == 16
    kept = [p for p in mirror.parent.iterdir() if ".pre-restore-" in p.name]
    assert len(kept) == 1 and b"written after the backup" in kept[0].read_bytes()
    assert_chain_verifies()


def test_backup_never_writes_into_a_directory_that_is_not_empty(mirror, tmp_path):
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(CommandError, match="not an empty directory"):
        call_command("autoheal_backup", "--output", str(target), "--prometheus", "", stdout=StringIO())
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]


def test_a_directory_without_a_manifest_is_not_restored(mirror, tmp_path):
    populate()
    (tmp_path / "half").mkdir()
    with pytest.raises(CommandError, match="not a complete Autoheal backup"):
        call_command("autoheal_restore", "--input", str(tmp_path / "half"), "--force", stdout=StringIO())
    assert Policy.objects.count() == 2


def manifest_db_file(backup: Path) -> str:
    return str(json.loads((backup / MANIFEST).read_text())["database"]["file"])


SNAPSHOT_RULES = """
groups:
  - name: autoheal
    rules:
      - record: autoheal:heartbeat:age_seconds
        expr: vector(3)
"""


@pytest.mark.prometheus
def test_backup_carries_a_prometheus_snapshot_and_restore_puts_its_blocks_back(prometheus, mirror, tmp_path):
    populate()
    prom = prometheus(SNAPSHOT_RULES, admin_api=True)
    prom.wait_for(lambda: bool(prom.api("/api/v1/query?query=autoheal:heartbeat:age_seconds")["result"]), "a sample")
    backup = tmp_path / "backup"

    out = StringIO()
    call_command(
        "autoheal_backup",
        "--output",
        str(backup),
        "--prometheus",
        prom.url,
        "--prometheus-data",
        str(prom.data_dir),
        stdout=out,
    )
    manifest = json.loads((backup / MANIFEST).read_text())
    snapshot = manifest["prometheus"]["snapshot"]
    assert manifest["prometheus"]["copied"] is True and manifest["warnings"] == []
    blocks = [p for p in (backup / "prometheus" / snapshot).iterdir() if p.is_dir()]
    assert blocks and all((block / "meta.json").is_file() for block in blocks)
    assert any(entry["path"].startswith(f"prometheus/{snapshot}/") for entry in manifest["files"])

    fresh = tmp_path / "new-prometheus-data"
    call_command(
        "autoheal_restore", "--input", str(backup), "--force", "--prometheus-data", str(fresh), stdout=StringIO()
    )
    assert sorted(p.name for p in fresh.iterdir()) == sorted(block.name for block in blocks)


@pytest.mark.prometheus
def test_backup_says_so_when_the_prometheus_admin_api_is_off(prometheus, mirror, tmp_path):
    populate()
    prom = prometheus(SNAPSHOT_RULES, admin_api=False)
    err = StringIO()
    call_command(
        "autoheal_backup", "--output", str(tmp_path / "b"), "--prometheus", prom.url, stdout=StringIO(), stderr=err
    )
    assert "Prometheus snapshot not taken" in err.getvalue() and "--web.enable-admin-api" in err.getvalue()
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    assert manifest["warnings"] and manifest["database"]["counts"]["audit.auditevent"] == 16


def test_the_backed_up_mirror_stops_at_the_database_snapshot(mirror, tmp_path):
    populate()
    # A line for an event committed after the snapshot was taken, as a busy system appends them.
    with open(mirror, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": 10**9, "kind": "ack", "message": "after the snapshot"}) + "\n")
    out = StringIO()
    call_command("autoheal_backup", "--output", str(tmp_path / "b"), "--prometheus", "", stdout=out)
    copied = (tmp_path / "b" / "audit" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in copied] == list(
        AuditEvent.objects.order_by("id").values_list("id", flat=True)
    )
    assert "1 line(s) written after the database snapshot left out" in out.getvalue()
