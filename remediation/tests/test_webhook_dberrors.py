"""503 means the database is gone, nothing else: each class of real PostgreSQL error, classified.

The errors are produced by a real PostgreSQL server (no mocks): a read-only database, a held lock
meeting lock_timeout and statement_timeout, a terminated backend, and values it refuses.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import DatabaseError, connection, connections

from remediation.dberrors import DatabaseFault, database_fault
from remediation.models import Alert, Job

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TOKEN = "dberror-token"
BODY = {
    "version": "4",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "DbErrorProbe", "container": "web"},
            "annotations": {},
            "startsAt": "2026-12-03T08:00:00Z",
            "fingerprint": "dbe1",
        }
    ],
}


@pytest.fixture(autouse=True)
def _tokens(settings: Any) -> None:
    settings.AUTOHEAL_WEBHOOK_TOKENS = [TOKEN]


def post(client: Any) -> Any:
    return client.post(
        "/alert", data=json.dumps(BODY), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
    )


def _admin() -> psycopg.Connection:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    params["dbname"] = "postgres"
    return psycopg.connect(**params, autocommit=True)


@contextlib.contextmanager
def database_setting(name: str, value: str) -> Iterator[None]:
    """Set a server parameter for every new session of the test database, then reset it."""
    test_db = connection.settings_dict["NAME"]
    with _admin() as admin:
        admin.execute(f'ALTER DATABASE "{test_db}" SET {name} = {value}')
    connection.close()
    try:
        yield
    finally:
        with _admin() as admin:
            admin.execute(f'ALTER DATABASE "{test_db}" RESET {name}')
        connection.close()


@contextlib.contextmanager
def table_locked() -> Iterator[None]:
    """Another session holds an exclusive lock on the incidents table."""
    params = connection.get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    with psycopg.connect(**params) as holder:
        holder.execute("LOCK TABLE remediation_alert IN ACCESS EXCLUSIVE MODE")
        yield
        holder.rollback()


def test_read_only_database_is_503_and_the_retry_is_stored(client: Any) -> None:
    with database_setting("default_transaction_read_only", "on"):
        response = post(client)
        assert response.status_code == 503
        assert response.json() == {"error": "database unavailable"}
    assert post(client).status_code == 202
    assert Alert.objects.filter(fingerprint="dbe1").count() == 1


@pytest.mark.parametrize("setting", ["lock_timeout", "statement_timeout"])
def test_a_timeout_is_503_and_the_retry_is_stored(client: Any, setting: str) -> None:
    with database_setting(setting, "'300ms'"), table_locked():
        response = post(client)
        assert response.status_code == 503
    assert post(client).status_code == 202
    assert Alert.objects.filter(fingerprint="dbe1").count() == 1


def _error(sql: str, using: Any = None) -> DatabaseError:
    conn = using or connection
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
    except DatabaseError as exc:
        return exc
    raise AssertionError(f"{sql} did not fail")


@pytest.mark.parametrize(
    ("sql", "fault"),
    [
        ("SELECT 'x'::int", DatabaseFault.DATA),  # 22P02
        ("SELECT '{\"a\":\"\\u0000\"}'::jsonb->>'a'", DatabaseFault.DATA),  # 22P05, the U+0000 of the issue
        ("SELECT 1 / 0", DatabaseFault.DATA),  # 22012
        ("SELECT chr(0)", DatabaseFault.DATA),  # 54000
        ("SELECT * FROM no_such_table", DatabaseFault.DEFECT),  # 42P01
        ("SELEC 1", DatabaseFault.DEFECT),  # 42601
        ("SET TRANSACTION READ ONLY; CREATE TEMP TABLE t (a int)", DatabaseFault.UNAVAILABLE),  # 25006
        ("SET statement_timeout = 50; SELECT pg_sleep(1)", DatabaseFault.UNAVAILABLE),  # 57014
    ],
)
def test_each_postgresql_error_class_is_classified(sql: str, fault: DatabaseFault) -> None:
    assert database_fault(_error(sql)) is fault
    connection.close()


def test_a_terminated_backend_and_a_refused_connection_are_unavailable() -> None:
    victim = connections.create_connection("default")
    try:
        with victim.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert database_fault(_error("SELECT 1", victim)) is DatabaseFault.UNAVAILABLE  # 57P01 / lost
    finally:
        victim.close()
    refused = connections.create_connection("default")
    refused.settings_dict = {**refused.settings_dict, "PORT": "1"}  # nothing listens on port 1
    try:
        refused.ensure_connection()
    except DatabaseError as exc:
        assert database_fault(exc) is DatabaseFault.UNAVAILABLE
    else:
        raise AssertionError("a connection to port 1 was accepted")


def test_a_value_the_database_refuses_is_a_400_naming_the_alert(client: Any) -> None:
    """A data error is never retried: refused with the alert named, nothing stored."""
    # A check constraint this delivery breaks (class 23): the same body would fail forever.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE remediation_alert ADD CONSTRAINT probe_refuses CHECK (alertname <> 'DbErrorProbe')")
    try:
        response = post(client)
        assert response.status_code == 400
        assert response.json()["error"].startswith("alerts[0]: the database refused a value of this delivery")
        assert not Alert.objects.exists()
        # In a delivery of several alerts, the one the database refuses is named.
        fine = {**BODY["alerts"][0], "labels": {"alertname": "Fine"}, "fingerprint": "ok1"}
        group = {**BODY, "alerts": [fine, fine | {"fingerprint": "ok2"}, BODY["alerts"][0]]}
        answer = client.post(
            "/alert", data=json.dumps(group), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
        )
        assert answer.status_code == 400
        assert answer.json()["error"].startswith("alerts[2]: the database refused")
        assert not Alert.objects.exists()  # the trials stored nothing either
        assert not Job.objects.exists()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE remediation_alert DROP CONSTRAINT probe_refuses")
