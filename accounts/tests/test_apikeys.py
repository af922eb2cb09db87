"""API keys: shown once, stored hashed, revocable, audited, and every use attributable."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.models import ApiKey
from accounts.services import AccountError, apikey_check, apikey_create
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def _create(name: str, role: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("autoheal_apikey", "create", "--name", name, "--role", role, stdout=out, stderr=err)
    assert "shown once" in err.getvalue()
    return out.getvalue().strip()


def test_created_key_is_printed_once_and_never_stored_in_clear() -> None:
    key = _create("ci-deploy", "ops")
    assert key.startswith("ahk_")
    row = ApiKey.objects.get(name="ci-deploy")
    secret = key.split("_", 2)[2]
    assert secret not in row.key_hash and key not in row.key_hash
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apikey")
        dumped = repr(cursor.fetchall())
    assert secret not in dumped
    listing = io.StringIO()
    call_command("autoheal_apikey", "list", stdout=listing)
    assert "ci-deploy" in listing.getvalue()
    assert secret not in listing.getvalue()


def test_creation_and_revocation_are_audited_without_the_key() -> None:
    key = _create("nightly", "admin")
    call_command("autoheal_apikey", "revoke", "nightly", stdout=io.StringIO())
    events = list(AuditEvent.objects.filter(kind="apikey_changed").order_by("id"))
    assert [e.data["action"] for e in events] == ["created", "revoked"]
    assert all(e.target == "nightly" and e.actor.startswith("cli") for e in events)
    for event in events:
        assert key not in repr(event.as_dict())
        assert key.split("_", 2)[2] not in repr(event.as_dict())


def test_a_key_authenticates_as_its_service_user_in_its_role(client: Any) -> None:
    key = _create("reader", "ops")
    response = client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200
    user = apikey_check(presented=key)
    assert user is not None and user.username == "apikey:reader"
    assert user.groups.filter(name="ops").exists()


def test_revoked_key_is_refused_at_once(client: Any) -> None:
    key = _create("temp", "ops")
    assert client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    call_command("autoheal_apikey", "revoke", "temp", stdout=io.StringIO())
    response = client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]


def test_a_tampered_key_is_refused(client: Any) -> None:
    key = _create("tamper", "admin")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {forged}").status_code == 401
    assert client.get("/audit", HTTP_AUTHORIZATION="Bearer ahk_short").status_code == 401


def test_bad_input_changes_nothing() -> None:
    with pytest.raises(CommandError, match="role"):
        call_command("autoheal_apikey", "create", "--name", "x", "--role", "root", stdout=io.StringIO())
    with pytest.raises(AccountError, match="name must be"):
        apikey_create(name="has space", role="ops", created_by="test")
    _create("dup", "ops")
    with pytest.raises(CommandError, match="already exists"):
        _create("dup", "admin")
    with pytest.raises(CommandError, match="no API key"):
        call_command("autoheal_apikey", "revoke", "missing", stdout=io.StringIO())
    assert ApiKey.objects.count() == 1
    assert AuditEvent.objects.filter(kind="apikey_changed").count() == 1


def test_last_used_is_written_at_most_once_a_minute(client: Any, django_assert_num_queries: Any) -> None:
    key = _create("hot", "ops")
    apikey_check(presented=key)
    first = ApiKey.objects.get(name="hot").last_used_at
    assert first is not None
    # A second use within the minute: one read, no write.
    with django_assert_num_queries(1):
        apikey_check(presented=key)
    assert ApiKey.objects.get(name="hot").last_used_at == first


def test_changes_made_with_a_key_are_attributed_to_it_in_the_audit(client: Any) -> None:
    key = _create("switch-bot", "admin")
    response = client.post(
        "/api/switch", data={"dry_run": True}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 200
    event = AuditEvent.objects.filter(kind="switch_changed").latest("id")
    assert event.actor == "apikey:switch-bot"
    assert key not in repr(event.as_dict())


def test_an_ops_key_cannot_flip_the_switch(client: Any) -> None:
    key = _create("reader-2", "ops")
    response = client.post(
        "/api/switch", data={"enabled": False}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(kind="switch_changed").exists()
