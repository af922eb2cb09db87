"""Safe defaults: DEBUG only when asked for, no credential on the debug page, the XSS header."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parents[2]


def _debug_in_subprocess(env: dict[str, str]) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOHEAL_", "SECRET_KEY"))}
    full.update(env, DJANGO_SETTINGS_MODULE="autoheal_site.settings")
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.strip()


def test_debug_is_off_unless_asked_for_explicitly() -> None:
    # What `make run` and the development compose file get: the development environment, no flag.
    assert _debug_in_subprocess({}) == "False"
    assert _debug_in_subprocess({"AUTOHEAL_ENV": "development"}) == "False"
    assert _debug_in_subprocess({"AUTOHEAL_DEBUG": "true"}) == "True"


@pytest.mark.django_db
def test_the_debug_page_masks_credentials_in_urls_and_the_environment(settings: Any, monkeypatch) -> None:
    settings.DEBUG = True
    settings.DATABASE_URL = "postgres://autoheal:db-pa55word@db.internal:5432/autoheal"
    settings.REDIS_URL = "redis://:redis-pa55word@cache.internal:6379/0"
    settings.AUTOHEAL_WEBHOOK_TOKENS = ["webhook-t0ken-value"]
    settings.OIDC_RP_CLIENT_SECRET = "oidc-s3cret-value"
    # The request's environment is on the page as well (META).
    answer = Client().get(
        "/", HTTP_HOST="wrong-host.example", HTTP_X_SENTRY_DSN="https://k:dsn-s3cret@sentry.example/1"
    )
    page = answer.content.decode()
    assert answer.status_code == 400
    assert "DATABASE_URL" in page and "REDIS_URL" in page  # the settings are listed ...
    for secret in ("db-pa55word", "redis-pa55word", "webhook-t0ken-value", "oidc-s3cret-value", "dsn-s3cret"):
        assert secret not in page  # ... without a credential
    assert "db.internal" not in page


@pytest.mark.django_db
def test_every_answer_says_x_xss_protection_0() -> None:
    client = Client()
    for path in ("/", "/readyz", "/audit", "/accounts/login/", "/no-such-page"):
        assert client.get(path).headers.get("X-XSS-Protection") == "0", path
