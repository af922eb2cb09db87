"""POST /alert: tokens, size limit and payload validation; a refused request stores nothing."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from audit.models import AuditEvent
from remediation.models import Alert, Job, Policy

pytestmark = pytest.mark.django_db

TOKEN = "current-token"


@pytest.fixture(autouse=True)
def _tokens(settings: Any) -> None:
    settings.AUTOHEAL_WEBHOOK_TOKENS = [TOKEN]


def post(client: Any, body: bytes, authorization: str | None = f"Bearer {TOKEN}", **extra: Any) -> Any:
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization is not None else {}
    return client.post("/alert", data=body, content_type="application/json", **headers, **extra)


def nothing_stored() -> bool:
    return not Alert.objects.exists() and not Job.objects.exists()


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Bearer ", f"Token {TOKEN}", "Basic !!!notbase64", f"Bearer {TOKEN}x", TOKEN],
)
def test_bad_token_gets_401_and_stores_nothing(
    client: Any, fixture_body: Callable[[str], bytes], authorization: str | None
) -> None:
    Policy.objects.create(name="p", matchers=['alertname="AutohealTestFlag"'], action="restart_container")
    response = post(client, fixture_body("single-firing.json"), authorization)
    assert response.status_code == 401
    assert "invalid webhook token" in response.json()["error"]
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert nothing_stored()
    # An unauthenticated client cannot write audit rows either.
    assert not AuditEvent.objects.exists()


def test_server_without_configured_token_refuses_everything_and_says_so(
    client: Any, settings: Any, fixture_body: Callable[[str], bytes]
) -> None:
    settings.AUTOHEAL_WEBHOOK_TOKENS = []
    response = post(client, fixture_body("single-firing.json"), "Bearer anything")
    assert response.status_code == 401
    assert "no webhook token configured" in response.json()["error"]
    assert "AUTOHEAL_WEBHOOK_TOKENS" in response.json()["error"]
    assert nothing_stored()


def test_alertmanager_bearer_delivery_is_accepted_as_captured(
    client: Any, settings: Any, fixture_body: Callable[[str], bytes], fixture_json: Callable[[str], dict[str, Any]]
) -> None:
    headers = fixture_json("bearer-firing.headers.json")["headers"]
    settings.AUTOHEAL_WEBHOOK_TOKENS = [headers["Authorization"].removeprefix("Bearer ")]
    response = post(client, fixture_body("bearer-firing.json"), headers["Authorization"])
    assert response.status_code == 202
    assert Alert.objects.get().fingerprint == "3c46274af4fa63a3"


def test_basic_auth_with_the_token_as_password_works(client: Any, fixture_body: Callable[[str], bytes]) -> None:
    credentials = base64.b64encode(f"alertmanager:{TOKEN}".encode()).decode()
    response = post(client, fixture_body("single-firing.json"), f"Basic {credentials}")
    assert response.status_code == 202
    wrong = base64.b64encode(f"{TOKEN}:nope".encode()).decode()
    assert post(client, fixture_body("single-firing.json"), f"Basic {wrong}").status_code == 401


def test_token_rotation_accepts_old_and_new_until_the_old_is_removed(
    client: Any, settings: Any, fixture_body: Callable[[str], bytes]
) -> None:
    settings.AUTOHEAL_WEBHOOK_TOKENS = ["old-token", "new-token"]
    assert post(client, fixture_body("single-firing.json"), "Bearer old-token").status_code == 202
    assert post(client, fixture_body("bearer-firing.json"), "bearer new-token").status_code == 202
    settings.AUTOHEAL_WEBHOOK_TOKENS = ["new-token"]
    assert post(client, fixture_body("group-five-firing.json"), "Bearer old-token").status_code == 401
    assert Alert.objects.count() == 2


def _mutate(fixture: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> bytes:
    change(fixture)
    return json.dumps(fixture).encode()


MALFORMED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("version", lambda p: p.update(version="3"), 'version: must be "4"'),
    ("no alerts", lambda p: p.pop("alerts"), "alerts: is missing"),
    ("alerts not list", lambda p: p.update(alerts={"a": 1}), "alerts: must be a list"),
    ("empty alerts", lambda p: p.update(alerts=[]), "alerts: is empty"),
    ("status", lambda p: p["alerts"][2].update(status="pending"), "alerts[2].status: must be firing or resolved"),
    ("startsAt", lambda p: p["alerts"][2].update(startsAt="yesterday"), "alerts[2].startsAt: not an RFC 3339 time"),
    (
        "startsAt zero",
        lambda p: p["alerts"][0].update(startsAt="0001-01-01T00:00:00Z"),
        "alerts[0].startsAt: is the zero",
    ),
    (
        "startsAt bad date",
        lambda p: p["alerts"][1].update(startsAt="2026-02-30T00:00:00Z"),
        "alerts[1].startsAt: not a valid",
    ),
    ("endsAt", lambda p: p["alerts"][4].update(endsAt=12), "alerts[4].endsAt: must be an RFC 3339 time string"),
    (
        "label value",
        lambda p: p["alerts"][3]["labels"].update(severity=5),
        "alerts[3].labels.severity: must be a string",
    ),
    ("labels", lambda p: p["alerts"][0].update(labels=["a"]), "alerts[0].labels: must be an object of strings"),
    ("fingerprint", lambda p: p["alerts"][1].pop("fingerprint"), "alerts[1].fingerprint: must be a non-empty string"),
    ("truncated", lambda p: p.update(truncatedAlerts=-1), "truncatedAlerts: must be a whole number"),
    ("alert not object", lambda p: p["alerts"].append("x"), "alerts[5]: must be an object"),
]


@pytest.mark.parametrize(("case", "change", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_payload_gets_400_naming_the_field_and_stores_nothing(
    client: Any,
    fixture_json: Callable[[str], dict[str, Any]],
    case: str,
    change: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    Policy.objects.create(name="p", matchers=['alertname=~".+"'], action="restart_container")
    response = post(client, _mutate(fixture_json("group-five-firing.json"), change))
    assert response.status_code == 400
    assert response.json()["error"].startswith(message), response.json()
    assert nothing_stored()
    # The refusal is on record, without the body or the token.
    rejected = AuditEvent.objects.get()
    assert rejected.kind == "webhook_rejected"
    assert rejected.data["status"] == 400
    assert TOKEN not in json.dumps(rejected.as_dict())
    assert "ContainerOOMKilled" not in json.dumps(rejected.data)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the body is not JSON"),
        (b"{not json", "the body is not JSON"),
        (b"\xff\xfe{}", "the body is not UTF-8 JSON"),
        (b"[]", "the body must be a JSON object"),
    ],
)
def test_body_that_is_not_a_json_object_gets_400(client: Any, body: bytes, message: str) -> None:
    response = post(client, body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    assert nothing_stored()


def test_body_over_the_limit_gets_413_and_stores_nothing(
    client: Any, settings: Any, fixture_body: Callable[[str], bytes]
) -> None:
    body = fixture_body("group-five-firing.json")
    settings.AUTOHEAL_WEBHOOK_MAX_BYTES = len(body) - 1
    response = post(client, body)
    assert response.status_code == 413
    assert "AUTOHEAL_WEBHOOK_MAX_BYTES" in response.json()["error"]
    assert nothing_stored()
    assert AuditEvent.objects.get().data["status"] == 413
    settings.AUTOHEAL_WEBHOOK_MAX_BYTES = len(body)
    assert post(client, body).status_code == 202


def test_body_longer_than_its_declared_length_is_still_bounded(
    rf: Any, settings: Any, fixture_body: Callable[[str], bytes]
) -> None:
    from remediation.webhook import alert_webhook

    body = fixture_body("group-five-firing.json")
    settings.AUTOHEAL_WEBHOOK_MAX_BYTES = 100
    request = rf.post("/alert", data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    # No Content-Length (as with chunked transfer): the limit applies to what is actually read.
    del request.META["CONTENT_LENGTH"]
    request._stream = io.BytesIO(body)
    response = alert_webhook(request)
    assert response.status_code == 413
    assert nothing_stored()


def test_only_post_is_allowed(client: Any) -> None:
    response = client.get("/alert", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
