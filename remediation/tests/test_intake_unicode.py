"""Every delivery Alertmanager can send is stored: control characters, lone surrogates, big values.

Runs on the database the suite runs on (PostgreSQL in CI); ``test_the_same_holds_on_sqlite``
runs this module again on SQLite, so both answer the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from audit.models import AuditEvent
from remediation.models import Alert, Job, Policy
from remediation.payload import storable

pytestmark = pytest.mark.django_db

TOKEN = "unicode-token"
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "alertmanager"


@pytest.fixture(autouse=True)
def _tokens(settings: Any) -> None:
    settings.AUTOHEAL_WEBHOOK_TOKENS = [TOKEN]


def post(client: Any, body: dict[str, Any] | bytes) -> Any:
    # ensure_ascii: a lone surrogate goes over the wire as "\ud800", as Alertmanager's Go encoder
    # would write an invalid code point that came in escaped.
    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=True).encode()
    return client.post("/alert", data=data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def delivery(labels: dict[str, str], *, fingerprint: str = "f00d", annotations: dict[str, str] | None = None) -> dict:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "autoheal",
        "groupKey": "{}:{}",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": annotations if annotations is not None else {"summary": "s"},
                "startsAt": "2026-12-03T08:00:00.123456789Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.local/graph",
                "fingerprint": fingerprint,
            }
        ],
    }


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json") if "headers" not in p.name))
def test_every_captured_alertmanager_delivery_is_accepted(client: Any, fixture_body: Callable, name: str) -> None:
    response = post(client, fixture_body(name))
    assert response.status_code == 202, response.content
    assert Alert.objects.exists()


def test_a_nul_in_a_label_is_stored_as_replacement_and_the_event_says_where(client: Any) -> None:
    Policy.objects.create(
        name="restart-odd", matchers=['alertname="Odd\ufffdName"'], action="restart_container", target="{{ labels.c }}"
    )
    body = delivery({"alertname": "Odd\x00Name", "c": "web\x001", "\x00key": "v"}, annotations={"a": "\x00"})
    response = post(client, body)
    assert response.status_code == 202, response.content
    assert response.json()["jobs"] == 1
    row = Alert.objects.get()
    assert row.labels == {"alertname": "Odd\ufffdName", "c": "web\ufffd1", "\ufffdkey": "v"}
    assert row.annotations == {"a": "\ufffd"}
    assert row.alertname == "Odd\ufffdName"
    # Matching and target rendering saw the same values as the audit.
    assert Job.objects.get().target == "web\ufffd1"
    received = AuditEvent.objects.get(kind="alert_received")
    assert received.data["labels"] == row.labels
    assert sorted(received.data["sanitized"]) == sorted(
        ["alerts[0].labels.alertname", "alerts[0].labels.c", "alerts[0].labels.\ufffdkey", "alerts[0].annotations.a"]
    )
    # A redelivery of the same body is the same incident, not a new one.
    assert post(client, body).json() == {"accepted": 0, "duplicates": 1, "jobs": 0}


def test_lone_surrogates_controls_line_separators_and_big_values_are_accepted(client: Any) -> None:
    labels = {
        "alertname": "Weird",
        "surrogate": "a\ud800b\udfff",
        "controls": "".join(chr(c) for c in range(1, 32)) + "\x7f",
        "separators": "line\u2028para\u2029end",
        "big": "x" * 8192,
        "astral": "\U0001f600\U000e0001\U0010fffd",
        "": "empty name",
    }
    response = post(client, delivery(labels, fingerprint="\x00fp"))
    assert response.status_code == 202, response.content
    row = Alert.objects.get()
    assert row.labels == {key: storable(value) for key, value in labels.items()}
    assert row.labels["controls"] == labels["controls"]  # only what cannot be held is replaced
    assert row.fingerprint == "\ufffdfp"


def test_an_empty_label_map_is_accepted(client: Any) -> None:
    response = post(client, delivery({}))
    assert response.status_code == 202, response.content
    assert AuditEvent.objects.filter(kind="no_policy").exists()


def test_two_label_names_that_become_equal_get_a_400_naming_the_field(client: Any) -> None:
    response = post(client, delivery({"a\x00": "1", "a\ufffd": "2"}))
    assert response.status_code == 400
    assert response.json()["error"].startswith("alerts[0].labels.a\ufffd:")
    assert not Alert.objects.exists()


_any_char = st.characters(codec=None, categories=None, exclude_categories=())
_text = st.text(_any_char, max_size=40) | st.sampled_from(["\x00", "\ud800", "\u2028", "\x7f", "x" * 9000])


@hypothesis_settings(
    max_examples=int(os.environ.get("AUTOHEAL_UNICODE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(labels=st.dictionaries(_text, _text, max_size=6), annotations=st.dictionaries(_text, _text, max_size=3))
def test_any_label_map_is_202_or_a_400_naming_the_field_never_5xx(
    client: Any, labels: dict[str, str], annotations: dict[str, str]
) -> None:
    Alert.objects.all().delete()
    response = post(client, delivery(labels, annotations=annotations))
    assert response.status_code in (202, 400), response.content
    if response.status_code == 400:
        # Only two names that become equal once U+0000 is replaced are refused, naming the field.
        assert response.json()["error"].startswith(("alerts[0].labels.", "alerts[0].annotations."))
        assert "is the same name as another one" in response.json()["error"]
        assert not Alert.objects.exists()
        return
    stored = Alert.objects.get()
    assert stored.labels == {storable(k): storable(v) for k, v in labels.items()}
    assert stored.annotations == {storable(k): storable(v) for k, v in annotations.items()}


@pytest.mark.postgres
def test_the_same_holds_on_sqlite(tmp_path: Path) -> None:
    """This module again, in a fresh process without DATABASE_URL: the embedded SQLite database."""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env["AUTOHEAL_DATA_DIR"] = str(tmp_path)
    env["AUTOHEAL_UNICODE_EXAMPLES"] = "40"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", __file__, "-k", "not sqlite"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout
