"""X-Forwarded-Proto is believed only from the trusted proxies."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def behind_proxy(settings):
    settings.AUTOHEAL_TRUSTED_PROXIES = ["10.1.2.0/24"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    return settings


def test_https_claimed_by_a_trusted_proxy_is_believed(client, behind_proxy) -> None:
    response = client.get("/readyz", HTTP_X_FORWARDED_PROTO="https", REMOTE_ADDR="10.1.2.7")
    assert response.status_code == 200


def test_https_claimed_by_a_direct_client_is_ignored(client, behind_proxy) -> None:
    response = client.get("/readyz", HTTP_X_FORWARDED_PROTO="https", REMOTE_ADDR="127.0.0.1")
    # Still plain HTTP: sent to HTTPS instead of being served as if it were secure.
    assert response.status_code == 301
    assert response["Location"].startswith("https://")


def test_plain_http_through_the_proxy_is_sent_to_https(client, behind_proxy) -> None:
    response = client.get("/readyz", HTTP_X_FORWARDED_PROTO="http", REMOTE_ADDR="10.1.2.7")
    assert response.status_code == 301
