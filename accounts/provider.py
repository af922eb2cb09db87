"""The OpenID provider's settings: explicit ``OIDC_OP_*`` values, or its discovery document.

Shared by browser login (:mod:`accounts.oidc`) and API token checks (:mod:`accounts.tokens`);
neither imports the other for it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests
from django.conf import settings

DISCOVERY_TTL_SECONDS = 3600
_DISCOVERY_KEYS = {
    "OIDC_OP_ISSUER": "issuer",
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
_discovery: dict[str, tuple[float, dict[str, Any]]] = {}
_discovery_lock = threading.Lock()


class ProviderUnavailable(RuntimeError):
    """The OpenID provider's discovery document could not be read."""


def _metadata(url: str) -> dict[str, Any]:
    with _discovery_lock:
        cached = _discovery.get(url)
        if cached and time.monotonic() - cached[0] < DISCOVERY_TTL_SECONDS:
            return cached[1]
        try:
            response = requests.get(url, timeout=getattr(settings, "OIDC_TIMEOUT", 5))  # nosec B113: timeout from OIDC_TIMEOUT
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise ProviderUnavailable(f"OpenID discovery failed: {type(exc).__name__}") from None
        if not isinstance(document, dict):
            raise ProviderUnavailable("OpenID discovery document is not a JSON object")
        _discovery[url] = (time.monotonic(), document)
        return document


def op_setting(name: str) -> str:
    """An ``OIDC_OP_*`` value: the explicit setting if given, else the provider's discovery document."""
    explicit = str(getattr(settings, name, "") or "")
    if explicit:
        return explicit
    url = getattr(settings, "OIDC_OP_DISCOVERY_URL", "")
    if not url:
        return ""
    return str(_metadata(url).get(_DISCOVERY_KEYS[name]) or "")
