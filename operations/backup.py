"""Backup and restore: the database, the JSONL mirror and a Prometheus TSDB snapshot.

Pure Python, so the same commands work on Linux and Windows. A backup is a directory:

    manifest.json     written last: what is in the backup, row counts, SHA-256 of every file
    db.dump           PostgreSQL custom-format dump (pg_dump), or
    db.sqlite3        SQLite copy made with the online backup API, or
    db.jsonl          portable dump (one serialized row a line) when pg_dump is not on PATH
    audit/            the JSONL mirror and its rotated siblings
    prometheus/NAME/  the TSDB snapshot, when Prometheus's data directory is reachable

Restore checks every checksum before it touches anything, refuses to overwrite a database that
holds data unless forced, and compares the row counts with the manifest afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from django.apps import apps
from django.conf import settings
from django.core import serializers
from django.core.management import call_command
from django.core.management.color import no_style
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, connection, transaction
from django.db.migrations.recorder import MigrationRecorder

from audit.models import AuditEvent
from autoheal_site.utc import iso_utc

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# Rebuilt by ``migrate`` on any database, and referenced by natural keys in the portable dump.
_REBUILT_BY_MIGRATE = ("contenttypes.contenttype", "auth.permission")
# Not worth restoring: a restored database logs everyone out, which is the safe outcome.
_NOT_BACKED_UP = ("sessions.session",)


class BackupError(Exception):
    """A backup or restore that cannot proceed; the message says what to do."""


@dataclass
class BackupReport:
    """What a backup or restore did, for the command to print."""

    directory: Path
    manifest: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- helpers --------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _counted_models() -> list[Any]:
    skip = set(_REBUILT_BY_MIGRATE) | set(_NOT_BACKED_UP)
    # Only tables that exist: a model whose migration has not been applied holds no rows.
    existing = set(connection.introspection.table_names())
    return [
        model
        for model in apps.get_models()
        if model._meta.managed
        and not model._meta.proxy
        and model._meta.label_lower not in skip
        and model._meta.db_table in existing
    ]


def _row_counts() -> dict[str, int]:
    return {model._meta.label_lower: model._default_manager.count() for model in _counted_models()}


def _applied_migrations() -> dict[str, str]:
    latest: dict[str, str] = {}
    for app, name in MigrationRecorder(connection).applied_migrations():
        if name > latest.get(app, ""):
            latest[app] = name
    return latest


def _pg_env() -> dict[str, str]:
    """libpq environment for pg_dump/pg_restore: the password never appears on a command line."""
    db: dict[str, Any] = dict(settings.DATABASES["default"])
    env = dict(os.environ)
    for key, var in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD")):
        if db.get(key):
            env[var] = str(db[key])
    env["PGDATABASE"] = str(db["NAME"])
    sslmode = (db.get("OPTIONS") or {}).get("sslmode")
    if sslmode:
        env["PGSSLMODE"] = str(sslmode)
    return env


def _run_pg_tool(argv: list[str]) -> None:
    result = subprocess.run(argv, env=_pg_env(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        # libpq messages name the host and database, never the password.
        raise BackupError(f"{argv[0]} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")


@contextmanager
def _snapshot_transaction() -> Iterator[str | None]:
    """A read-only, repeatable-read transaction; on PostgreSQL also its exported snapshot id.

    Counting rows and dumping them from one snapshot makes the manifest's counts exactly those of
    the dump, even while Autoheal keeps writing.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cursor.execute("SELECT pg_export_snapshot()")
                yield cursor.fetchone()[0]
        else:
            yield None


# --- the portable format --------------------------------------------------------------------
# dumpdata's JSON encoder cuts datetimes to milliseconds, which would break the audit hash chain
# (the hash covers the full timestamp). This format keeps full precision, streams in batches so a
# million audit events never sit in memory at once, and loads rows as they were (no save() hooks).

_BATCH = 2000


def _portable_models() -> list[Any]:
    app_list = {config: None for config in apps.get_app_configs() if config.models_module is not None}
    ordered = serializers.sort_dependencies(app_list.items(), allow_cycles=True)
    counted = set(_counted_models())
    return [m for m in ordered if m in counted]


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return DjangoJSONEncoder().default(value)


def _dump_portable(target: Path) -> None:
    with open(target, "w", encoding="utf-8", newline="\n") as handle:
        for model in _portable_models():
            queryset = model._default_manager.order_by("pk")
            batch: list[Any] = []
            for obj in queryset.iterator(chunk_size=_BATCH):
                batch.append(obj)
                if len(batch) == _BATCH:
                    _write_rows(handle, batch)
                    batch = []
            _write_rows(handle, batch)


def _write_rows(handle: Any, objects: list[Any]) -> None:
    for row in serializers.serialize("python", objects, use_natural_foreign_keys=True):
        handle.write(json.dumps(row, default=_encode, ensure_ascii=False, separators=(",", ":")) + "\n")


def _load_portable(source: Path) -> None:
    loaded: set[Any] = set()
    with open(source, encoding="utf-8") as handle:
        batch: list[dict[str, Any]] = []
        for line in handle:
            if line.strip():
                batch.append(json.loads(line))
            if len(batch) == _BATCH:
                loaded |= _save_rows(batch)
                batch = []
        loaded |= _save_rows(batch)
    # Rows came with their ids: move each sequence past the highest one.
    statements = connection.ops.sequence_reset_sql(no_style(), list(loaded))
    if statements:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)


def _save_rows(rows: list[dict[str, Any]]) -> set[Any]:
    models: set[Any] = set()
    by_model: dict[Any, list[Any]] = {}
    for item in serializers.deserialize("python", rows, handle_forward_references=False):
        model = type(item.object)
        models.add(model)
        if item.m2m_data:
            item.save()  # raw save: the model's own save() is not called
        else:
            by_model.setdefault(model, []).append(item.object)
    for model, objects in by_model.items():
        model._base_manager.bulk_create(objects)
    return models


# --- backup ---------------------------------------------------------------------------------


def _dump_database(*, directory: Path, db_format: str, report: BackupReport) -> dict[str, Any]:
    vendor = connection.vendor
    if db_format not in ("auto", "native", "json"):
        raise BackupError("--db-format must be auto, native or json")
    use_pg_dump = vendor == "postgresql" and db_format in ("auto", "native") and shutil.which("pg_dump")
    if vendor == "postgresql" and db_format == "native" and not use_pg_dump:
        raise BackupError("pg_dump is not on PATH: install the PostgreSQL client or use --db-format json")
    with _snapshot_transaction() as snapshot:
        counts = _row_counts()
        migrations = _applied_migrations()
        last_audit_id = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        if use_pg_dump:
            target = directory / "db.dump"
            _run_pg_tool(
                [
                    "pg_dump",
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    "-f",
                    str(target),
                ]
            )
            fmt = "pg_dump"
            report.notes.append("database: pg_dump custom format (pg_dump found on PATH)")
        elif vendor == "sqlite" and db_format in ("auto", "native"):
            target = directory / "db.sqlite3"
            source = sqlite3.connect(str(settings.DATABASES["default"]["NAME"]))
            copy = sqlite3.connect(str(target))
            try:
                source.backup(copy)
            finally:
                copy.close()
                source.close()
            fmt = "sqlite"
            report.notes.append("database: SQLite online backup")
        else:
            target = directory / "db.jsonl"
            _dump_portable(target)
            fmt = "jsonl"
            why = "pg_dump is not on PATH" if vendor == "postgresql" and db_format == "auto" else "requested"
            report.notes.append(f"database: portable JSON dump ({why})")
    return {
        "vendor": vendor,
        "format": fmt,
        "file": target.name,
        "counts": counts,
        "migrations": migrations,
        "last_audit_id": last_audit_id,
    }


def _mirror_files(mirror_path: str) -> list[Path]:
    """The JSONL mirror and its rotated siblings (audit.jsonl.1, audit.jsonl-20261127.gz...)."""
    if not mirror_path:
        return []
    main = Path(mirror_path)
    if not main.parent.is_dir():
        return []
    siblings = [
        p
        for p in main.parent.iterdir()
        if p.is_file() and p.name != main.name and p.name.startswith((main.name + ".", main.name + "-"))
    ]
    return ([main] if main.is_file() else []) + sorted(siblings)


def _copy_mirror(*, directory: Path, mirror_path: str, last_audit_id: int, report: BackupReport) -> dict[str, Any]:
    files = _mirror_files(mirror_path)
    if not files:
        report.notes.append("JSONL mirror: nothing to copy" + ("" if mirror_path else " (AUTOHEAL_AUDIT_JSONL unset)"))
        return {"files": [], "main": ""}
    (directory / "audit").mkdir()
    main = Path(mirror_path)
    later = 0
    for source in files:
        if source == main:
            later = _copy_mirror_until(source, directory / "audit" / source.name, last_audit_id)
        else:
            shutil.copy2(source, directory / "audit" / source.name)
    report.notes.append(f"JSONL mirror: {len(files)} file(s) copied")
    if later:
        report.notes.append(f"JSONL mirror: {later} line(s) written after the database snapshot left out")
    return {"files": [p.name for p in files], "main": main.name}


def _copy_mirror_until(source: Path, target: Path, last_audit_id: int) -> int:
    """Copy the live mirror up to the snapshot's newest event, so backup and mirror agree.

    Events committed while the backup ran are in the live file but not in the dump; after a restore
    their ids would be handed out again. A line that is not an event as the mirror writes it is kept.
    """
    skipped = 0
    with open(source, "rb") as reader, open(target, "wb") as writer:
        for line in reader:
            try:
                event_id = json.loads(line)["id"]
            except (ValueError, KeyError, TypeError):
                event_id = None
            if isinstance(event_id, int) and event_id > last_audit_id:
                skipped += 1
                continue
            writer.write(line)
    shutil.copystat(source, target)
    return skipped


def _prometheus_snapshot(
    *, directory: Path, url: str, data_dir: Path | None, timeout: float, report: BackupReport
) -> dict[str, Any]:
    if not url:
        report.notes.append("Prometheus: no URL configured (AUTOHEAL_PROMETHEUS_URL), no TSDB snapshot")
        return {}
    endpoint = url.rstrip("/") + "/api/v1/admin/tsdb/snapshot"
    try:
        response = requests.post(endpoint, timeout=timeout)
    except requests.RequestException as exc:
        report.warnings.append(f"Prometheus snapshot not taken: cannot reach {endpoint} ({type(exc).__name__})")
        return {"error": "unreachable"}
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or body.get("status") != "success":
        error = str(body.get("error") or f"HTTP {response.status_code}")
        hint = " (start Prometheus with --web.enable-admin-api)" if "disabled" in error else ""
        report.warnings.append(f"Prometheus snapshot not taken: {error}{hint}")
        return {"error": error}
    name = str(body["data"]["name"])
    result: dict[str, Any] = {"snapshot": name, "copied": False}
    if data_dir is None:
        report.notes.append(
            f"Prometheus: snapshot {name} taken in Prometheus's data directory (snapshots/{name}); "
            "pass --prometheus-data to copy it into the backup"
        )
        return result
    source = data_dir / "snapshots" / name
    if not source.is_dir():
        report.warnings.append(f"Prometheus snapshot {name} taken but not found under {data_dir}/snapshots")
        return result
    shutil.copytree(source, directory / "prometheus" / name)
    result["copied"] = True
    report.notes.append(f"Prometheus: snapshot {name} copied")
    return result


def backup_create(
    *,
    output: Path,
    db_format: str = "auto",
    prometheus_url: str = "",
    prometheus_data: Path | None = None,
    timeout: float = 120.0,
    now: datetime | None = None,
) -> BackupReport:
    """Write a complete backup into ``output`` (new or empty), manifest last."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise BackupError(f"{output} is not an empty directory: choose a new one, a backup never overwrites")
    output.mkdir(parents=True, exist_ok=True)
    report = BackupReport(directory=output, manifest={})
    database = _dump_database(directory=output, db_format=db_format, report=report)
    mirror = _copy_mirror(
        directory=output,
        mirror_path=settings.AUTOHEAL_AUDIT_JSONL,
        last_audit_id=int(database["last_audit_id"]),
        report=report,
    )
    prometheus = _prometheus_snapshot(
        directory=output, url=prometheus_url, data_dir=prometheus_data, timeout=timeout, report=report
    )
    files = [
        {"path": path.relative_to(output).as_posix(), "bytes": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(output.rglob("*"))
        if path.is_file()
    ]
    manifest = {
        "format": FORMAT_VERSION,
        "autoheal_version": settings.VERSION,
        "created_at": iso_utc(now or datetime.now(UTC)),
        "database": database,
        "mirror": mirror,
        "prometheus": prometheus,
        "files": files,
        "warnings": report.warnings,
    }
    partial = output / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # The manifest appears last and atomically: a directory without it is not a backup.
    os.replace(partial, output / MANIFEST)
    report.manifest = manifest
    return report


# --- restore --------------------------------------------------------------------------------


def backup_read(*, directory: Path) -> dict[str, Any]:
    """Load and check a backup's manifest and every file's checksum; raise BackupError if anything is off."""
    path = directory / MANIFEST
    if not path.is_file():
        raise BackupError(f"{directory} has no {MANIFEST}: not a complete Autoheal backup")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise BackupError(f"{path} is not valid JSON") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise BackupError(f"unsupported backup format {manifest.get('format')!r} (expected {FORMAT_VERSION})")
    for entry in manifest["files"]:
        file = directory / entry["path"]
        if not file.is_file():
            raise BackupError(f"backup file missing: {entry['path']}")
        if file.stat().st_size != entry["bytes"] or _sha256(file) != entry["sha256"]:
            raise BackupError(f"backup file damaged (checksum mismatch): {entry['path']}")
    return manifest


def _database_holds_data() -> dict[str, int]:
    from audit.models import AuditEvent
    from remediation.models import Alert, Job, Policy

    held: dict[str, int] = {}
    for model in (AuditEvent, Policy, Alert, Job):
        try:
            with transaction.atomic():
                count = model._default_manager.count()
        except DatabaseError:
            count = 0  # no such table: a wiped database
        if count:
            held[str(model._meta.verbose_name_plural)] = count
    return held


def _restore_database(*, directory: Path, database: dict[str, Any]) -> None:
    fmt = database["format"]
    source = directory / database["file"]
    vendor = connection.vendor
    if fmt == "pg_dump":
        if vendor != "postgresql":
            raise BackupError("this backup is a PostgreSQL dump: restore it into PostgreSQL (DATABASE_URL)")
        if not shutil.which("pg_restore"):
            raise BackupError("pg_restore is not on PATH: install the PostgreSQL client to restore this backup")
        connection.close()
        # One transaction: a failing restore leaves the database as it was.
        _run_pg_tool(
            [
                "pg_restore",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                "--dbname",
                str(settings.DATABASES["default"]["NAME"]),
                str(source),
            ]
        )
        call_command("migrate", interactive=False, verbosity=0)
    elif fmt == "sqlite":
        if vendor != "sqlite":
            raise BackupError("this backup is a SQLite database: restore it with DATABASE_URL unset")
        connection.close()
        backup = sqlite3.connect(str(source))
        live = sqlite3.connect(str(settings.DATABASES["default"]["NAME"]))
        try:
            backup.backup(live)
        finally:
            live.close()
            backup.close()
        call_command("migrate", interactive=False, verbosity=0)
    elif fmt == "jsonl":
        call_command("migrate", interactive=False, verbosity=0)
        skip = {apps.get_model(label)._meta.db_table for label in _REBUILT_BY_MIGRATE}
        tables = [t for t in connection.introspection.django_table_names(only_existing=True) if t not in skip]
        # Emptying and loading in one transaction: a file that fails to load changes nothing.
        with transaction.atomic():
            connection.ops.execute_sql_flush(connection.ops.sql_flush(no_style(), tables, reset_sequences=True))
            _load_portable(source)
    else:
        raise BackupError(f"unknown database format in the manifest: {fmt!r}")


def _restore_mirror(*, directory: Path, mirror: dict[str, Any], mirror_path: str, report: BackupReport) -> None:
    names: list[str] = mirror.get("files", [])
    if not names:
        return
    if not mirror_path:
        report.warnings.append("the backup holds a JSONL mirror but AUTOHEAL_AUDIT_JSONL is unset: not restored")
        return
    main = Path(mirror_path)
    main.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in names:
        target = main if name == mirror["main"] else main.parent / name
        if target.exists():
            # Nothing is ever lost: the current file is kept beside the restored one.
            aside = target.with_name(f"{target.name}.pre-restore-{stamp}")
            os.replace(target, aside)
            report.notes.append(f"kept the existing {target.name} as {aside.name}")
        shutil.copy2(directory / "audit" / name, target)
    report.notes.append(f"JSONL mirror: {len(names)} file(s) restored")


def _restore_prometheus(
    *, directory: Path, prometheus: dict[str, Any], data_dir: Path | None, report: BackupReport
) -> None:
    if not prometheus.get("copied"):
        return
    name = prometheus["snapshot"]
    if data_dir is None:
        report.notes.append(
            f"Prometheus snapshot {name} is in prometheus/{name}: pass --prometheus-data DIR (Prometheus stopped) "
            "to copy its blocks back"
        )
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    copied = 0
    for block in sorted((directory / "prometheus" / name).iterdir()):
        if block.is_dir() and not (data_dir / block.name).exists():
            shutil.copytree(block, data_dir / block.name)
            copied += 1
    report.notes.append(f"Prometheus: {copied} TSDB block(s) copied into {data_dir}")


def backup_restore(*, source: Path, force: bool = False, prometheus_data: Path | None = None) -> BackupReport:
    """Restore a backup made by ``backup_create``; refuses to replace data unless ``force``."""
    manifest = backup_read(directory=source)
    report = BackupReport(directory=source, manifest=manifest)
    held = _database_holds_data()
    if held and not force:
        summary = ", ".join(f"{count} {name}" for name, count in sorted(held.items()))
        raise BackupError(f"the database already holds data ({summary}); restoring replaces it: pass --force")
    _restore_database(directory=source, database=manifest["database"])
    report.notes.append(f"database restored from {manifest['database']['file']} ({manifest['database']['format']})")
    _restore_mirror(
        directory=source, mirror=manifest["mirror"], mirror_path=settings.AUTOHEAL_AUDIT_JSONL, report=report
    )
    _restore_prometheus(directory=source, prometheus=manifest["prometheus"], data_dir=prometheus_data, report=report)
    counts = _row_counts()
    expected: dict[str, int] = manifest["database"]["counts"]
    wrong = [
        f"{label}: {counts.get(label, 0)} rows, backup had {rows}"
        for label, rows in sorted(expected.items())
        if counts.get(label, 0) != rows
    ]
    if wrong:
        raise BackupError("restored, but the row counts differ from the backup: " + "; ".join(wrong))
    report.notes.append(f"row counts match the backup ({sum(expected.values())} rows in {len(expected)} tables)")
    return report
