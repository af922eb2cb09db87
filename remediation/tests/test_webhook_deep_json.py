"""JSON nested beyond the parser's depth bound is a 400 on /alert, and stores nothing."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from remediation.models import Alert
from remediation.tests.test_webhook import TOKEN, post

pytestmark = pytest.mark.django_db

DEPTH = 100_000


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEPTH + b"]" * DEPTH,
        b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
        b'{"alerts": [{"labels": ' + b"[" * DEPTH + b"]" * DEPTH + b"}]}",
    ],
)
def test_over_deep_json_gets_400_and_stores_nothing(client: Any, settings: Any, body: bytes) -> None:
    settings.AUTOHEAL_WEBHOOK_TOKENS = [TOKEN]
    response = post(client, body)
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]
    assert not Alert.objects.exists()
    assert AuditEvent.objects.get().kind == "webhook_rejected"


@pytest.mark.parametrize("path", ["/api/switch", "/ack"])
def test_over_deep_json_on_the_api_gets_400(admin_client: Any, path: str) -> None:
    from remediation.models import Switch

    before = list(Switch.objects.values())
    body = b"[" * DEPTH + b"]" * DEPTH
    response = admin_client.post(path, data=body, content_type="application/json")
    assert response.status_code == 400
    assert list(Switch.objects.values()) == before
