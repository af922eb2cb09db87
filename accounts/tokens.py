"""JWT verification against the provider's JWKS, done locally on every request.

mozilla-django-oidc would call the provider's userinfo endpoint per request and check no
signature, audience or expiry; here a token is accepted only when its signature verifies with a
key from the provider's JWKS under an allowed asymmetric algorithm (RS256/ES256: never ``none``,
never HMAC, whose "secret" would be the public key), and ``iss``, ``aud``, ``exp`` and ``nbf``
hold within a small leeway.

Keys are cached per JWKS URL. A token naming an unknown ``kid`` triggers a refetch (the provider
rotated its keys), at most once per ``JWKS_MIN_REFETCH_SECONDS`` so a stream of forged ``kid``
values cannot turn Autoheal into a load generator against the provider.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import jwt
import requests
from django.conf import settings

from accounts.provider import ProviderUnavailable, op_setting

ALLOWED_ALGORITHMS = ("RS256", "ES256")
JWKS_TTL_SECONDS = 3600
JWKS_MIN_REFETCH_SECONDS = 30


class TokenError(Exception):
    """A token that must be refused; the message says why and never contains the token."""


class _KeySet:
    def __init__(self, url: str) -> None:
        self.url = url
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = float("-inf")
        self.lock = threading.Lock()

    def _refresh(self) -> None:
        try:
            response = requests.get(self.url, timeout=getattr(settings, "OIDC_TIMEOUT", 5))  # nosec B113: timeout from OIDC_TIMEOUT
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise TokenError(f"the provider's keys are unavailable ({type(exc).__name__})") from None
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or "kid" not in entry:
                continue
            try:
                keys[str(entry["kid"])] = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type this library cannot use; the others still work
        self.keys = keys
        self.fetched_at = time.monotonic()

    def get(self, kid: str) -> jwt.PyJWK:
        with self.lock:
            age = time.monotonic() - self.fetched_at
            if age >= JWKS_TTL_SECONDS or (kid not in self.keys and age >= JWKS_MIN_REFETCH_SECONDS):
                self._refresh()
            key = self.keys.get(kid)
        if key is None:
            raise TokenError("the token is signed with a key the provider does not publish")
        return key


_key_sets: dict[str, _KeySet] = {}
_key_sets_lock = threading.Lock()


def _key_set(url: str) -> _KeySet:
    with _key_sets_lock:
        if url not in _key_sets:
            _key_sets[url] = _KeySet(url)
        return _key_sets[url]


def forget_keys() -> None:
    """Drop every cached JWKS (tests; a restart does the same)."""
    with _key_sets_lock:
        _key_sets.clear()


def looks_like_jwt(token: str) -> bool:
    parts = token.split(".")
    return len(parts) == 3 and all(parts[:2]) and token.startswith("eyJ")


def verify_jwt(
    token: str, *, jwks_url: str, issuer: str, audience: str, algorithms: list[str] | None = None
) -> dict[str, Any]:
    """The verified claims of ``token``, or TokenError saying why it is refused."""
    if not jwks_url or not issuer or not audience:
        raise TokenError("bearer tokens are not configured on this server")
    allowed = [a for a in (algorithms or ALLOWED_ALGORITHMS) if a in ALLOWED_ALGORITHMS]
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("the token is not a well-formed JWT") from None
    algorithm = header.get("alg")
    if algorithm not in allowed:
        raise TokenError(f"the token's algorithm is not allowed (allowed: {', '.join(allowed)})")
    key = _key_set(jwks_url).get(str(header.get("kid", "")))
    if key.algorithm_name != algorithm:
        raise TokenError("the token's algorithm does not match its key")
    try:
        return jwt.decode(
            token,
            key=key.key,
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            leeway=getattr(settings, "OIDC_JWT_LEEWAY_SECONDS", 10),
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenError("the token is not valid yet") from None
    except jwt.InvalidAudienceError:
        raise TokenError("the token is for another audience") from None
    except jwt.InvalidIssuerError:
        raise TokenError("the token is from another issuer") from None
    except jwt.InvalidSignatureError:
        raise TokenError("the token's signature does not verify") from None
    except jwt.PyJWTError as exc:
        raise TokenError(f"the token is invalid ({type(exc).__name__})") from None


def api_tokens_enabled() -> bool:
    """JWT access tokens are accepted when an API audience and the provider are configured."""
    return bool(
        getattr(settings, "OIDC_API_AUDIENCE", "")
        and (
            getattr(settings, "OIDC_OP_DISCOVERY_URL", "")
            or (getattr(settings, "OIDC_OP_JWKS_ENDPOINT", "") and getattr(settings, "OIDC_OP_ISSUER", ""))
        )
    )


def verify_access_token(token: str) -> dict[str, Any]:
    """The claims of an API access token (audience ``OIDC_API_AUDIENCE``), or TokenError."""
    if not api_tokens_enabled():
        raise TokenError("bearer JWTs are not accepted by this server (no OIDC_API_AUDIENCE)")
    try:
        jwks_url = op_setting("OIDC_OP_JWKS_ENDPOINT")
        issuer = op_setting("OIDC_OP_ISSUER")
    except ProviderUnavailable as exc:
        raise TokenError(str(exc)) from None
    return verify_jwt(token, jwks_url=jwks_url, issuer=issuer, audience=settings.OIDC_API_AUDIENCE)
