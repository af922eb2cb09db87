"""Secrets never reach logs, error pages or answers."""

from __future__ import annotations

import logging
import string
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.urls import path
from hypothesis import assume, given
from hypothesis import strategies as st

from accounts.redact import RedactSecretsFilter, redact

API_KEY = "ahk_0123456789ab_S3cretS3cretS3cretS3cretS3cretS3cret0"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWNoaW5lIn0.c2lnbmF0dXJlLXRoYXQtbG9va3MtcmVhbA"


def _failing_view(request: HttpRequest) -> HttpResponse:
    # What a library does when it fails: quote the request, credentials included.
    raise RuntimeError(f"upstream refused {request.META.get('HTTP_AUTHORIZATION')} for {request.GET.urlencode()}")


urlpatterns = [path("boom", _failing_view)]


@pytest.fixture
def captured_log(caplog: Any) -> Any:
    """Log records as the console handler writes them (with the project's redaction filter)."""
    caplog.handler.addFilter(RedactSecretsFilter())
    caplog.set_level(logging.INFO)
    yield caplog
    caplog.handler.removeFilter(caplog.handler.filters[-1])


@pytest.mark.django_db
@pytest.mark.urls("accounts.tests.test_secrets")
def test_a_server_error_shows_no_token_in_the_page_or_the_logs(
    client: Any, settings: Any, captured_log: Any, make_api_key: Any
) -> None:
    settings.DEBUG = False
    client.raise_request_exception = False
    key = make_api_key("crashy", "ops")
    response = client.get(f"/boom?access_token={JWT}", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 500
    assert key.encode() not in response.content and JWT.encode() not in response.content
    assert "Internal Server Error" in captured_log.text
    assert "upstream refused" in captured_log.text
    assert key not in captured_log.text and JWT not in captured_log.text
    assert "[redacted]" in captured_log.text


@pytest.mark.django_db
def test_refused_credentials_are_not_echoed(client: Any, captured_log: Any) -> None:
    for token in (API_KEY, JWT, "opaque-token-value-123456"):
        response = client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 401
        assert token.encode() not in response.content
    assert API_KEY not in captured_log.text and JWT not in captured_log.text


def test_redaction_masks_every_credential_shape() -> None:
    text = redact(
        f"Authorization: Bearer {API_KEY} id_token={JWT}&x=1 {{'client_secret': 'abc123'}} password=hunter2 "
        "Basic dXNlcjpwYXNzd29yZA=="
    )
    for secret in (API_KEY, JWT, "abc123", "hunter2", "dXNlcjpwYXNzd29yZA=="):
        assert secret not in text
    assert "x=1" in text


@pytest.mark.django_db
def test_metrics_need_their_token_when_one_is_set(client: Any, settings: Any) -> None:
    assert client.get("/metrics").status_code == 200
    settings.AUTOHEAL_METRICS_TOKEN = "scrape-token-0123456789"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789")
    assert response.status_code == 200
    assert b"scrape-token" not in response.content


@pytest.mark.django_db
def test_cors_answers_only_listed_origins(client: Any, settings: Any) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://grafana.example"]
    allowed = client.options("/audit", HTTP_ORIGIN="https://grafana.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET")
    assert allowed["Access-Control-Allow-Origin"] == "https://grafana.example"
    other = client.get("/audit", HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in other


@given(
    prefix=st.text(max_size=40),
    suffix=st.text(max_size=40),
    secret=st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=20, max_size=60),
)
def test_no_api_key_or_jwt_survives_redaction(prefix: str, suffix: str, secret: str) -> None:
    assume(secret not in prefix + suffix)
    key = f"ahk_0123456789ab_{secret}"
    token = f"eyJhbGciOiJSUzI1NiJ9.eyJ{secret}.{secret[::-1]}"
    text = redact(f"{prefix} {key} {suffix} Authorization: Bearer {token} {prefix}")
    assert key not in text
    assert token not in text
    assert secret not in text


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "١٢"])
def test_a_garbage_content_length_is_a_400_not_a_server_error(client: Any, make_api_key: Any, value: str) -> None:
    key = make_api_key("garbage", "ops")
    response = client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {key}", CONTENT_LENGTH=value)
    assert response.status_code == 400
    assert "Content-Length" in response.json()["error"]
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_an_underscore_spelt_content_length_is_ignored(client: Any, make_api_key: Any) -> None:
    key = make_api_key("spoof", "ops")
    response = client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_CONTENT_LENGTH="garbage")
    assert response.status_code == 200
