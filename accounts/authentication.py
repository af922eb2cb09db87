"""``Authorization: Bearer`` for scripts and services: API keys (``ahk_…``) and provider JWTs.

Both work for DRF views (the authentication classes below, first in DRF's defaults) and for
plain Django views such as the SSE stream (``BearerTokenMiddleware``, which sets ``request.user``
once per request; the DRF classes reuse its answer). Routes with their own token (the webhook,
/metrics) are left alone. A bearer-authenticated request carries no ambient credential a browser
could replay, so CSRF checks do not apply to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from accounts.ratelimit import route_name
from accounts.services import API_KEY_PREFIX, apikey_check, identity_user

REALM = 'Bearer realm="autoheal"'
# Routes that check their own bearer token (the webhook token, the metrics token).
OWN_TOKEN_ROUTES = ("alert-webhook", "prometheus-django-metrics")
_CACHE_ATTR = "_autoheal_bearer"


class BearerError(Exception):
    """A bearer credential that is refused: ``status`` 401 (unknown/invalid) or 403 (no role)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def bearer_token(request: HttpRequest) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _apikey_user(token: str) -> Any:
    user = apikey_check(presented=token)
    if user is None:
        raise BearerError("invalid or revoked API key")
    return user


def _jwt_user(token: str) -> Any:
    from accounts.oidc import roles_from_claims
    from accounts.tokens import TokenError, looks_like_jwt, verify_access_token

    if not looks_like_jwt(token):
        raise BearerError(f"unknown bearer token: use an API key ({API_KEY_PREFIX}…) or a provider access token")
    try:
        claims = verify_access_token(token)
    except TokenError as exc:
        raise BearerError(f"bearer token refused: {exc}") from None
    roles = roles_from_claims(claims)
    if not roles:
        raise BearerError("this token carries neither the ops nor the admin role", status=403)
    return identity_user(issuer=claims["iss"], sub=str(claims["sub"]), roles=roles, claims=claims, login=False)


def token_user(token: str) -> Any:
    """The user behind a bearer token, read afresh (no cache); BearerError when it is refused."""
    return _apikey_user(token) if token.startswith(API_KEY_PREFIX) else _jwt_user(token)


def bearer_user(request: HttpRequest) -> Any | None:
    """The user behind the request's bearer token (cached on the request), None without one.

    Raises BearerError for a bearer token that is present but refused.
    """
    cached = getattr(request, _CACHE_ATTR, None)
    if cached is not None:
        if isinstance(cached, BearerError):
            raise cached
        return cached
    token = bearer_token(request)
    if token is None:
        return None
    try:
        user = token_user(token)
    except BearerError as exc:
        setattr(request, _CACHE_ATTR, exc)
        raise
    setattr(request, _CACHE_ATTR, user)
    return user


def _refusal(exc: BearerError) -> JsonResponse:
    response = JsonResponse({"error": exc.message}, status=exc.status)
    if exc.status == 401:
        response["WWW-Authenticate"] = f'{REALM}, error="invalid_token"'
    return response


class BearerTokenMiddleware:
    """Authenticate bearer tokens for every view.

    Place it after AuthenticationMiddleware (it replaces ``request.user``) and after the rate
    limiter, which counts refused tokens against the client's address before this answers 401.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if bearer_token(request) is not None and route_name(request) not in OWN_TOKEN_ROUTES:
            try:
                user: Any = bearer_user(request)
            except BearerError as exc:
                return _refusal(exc)
            request.user = user

            async def auser() -> Any:
                return user

            request.auser = auser  # type: ignore[attr-defined]
            request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
        return self.get_response(request)


class _BearerAuthentication(BaseAuthentication):
    kind = ""

    def handles(self, token: str) -> bool:
        raise NotImplementedError

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        token = bearer_token(request._request)
        if token is None or not self.handles(token) or route_name(request._request) in OWN_TOKEN_ROUTES:
            return None
        try:
            user = bearer_user(request._request)
        except BearerError as exc:
            if exc.status == 403:
                raise exceptions.PermissionDenied(exc.message) from None
            raise exceptions.AuthenticationFailed(exc.message) from None
        return (user, None)

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (with this challenge) rather than 403 to unauthenticated callers.
        return REALM


class ApiKeyAuthentication(_BearerAuthentication):
    """DRF: ``Authorization: Bearer ahk_…`` API keys; the user is the key's service user."""

    def handles(self, token: str) -> bool:
        return token.startswith(API_KEY_PREFIX)


class JWTAuthentication(_BearerAuthentication):
    """DRF: provider-issued JWT access tokens, verified locally (accounts/tokens.py)."""

    def handles(self, token: str) -> bool:
        return not token.startswith(API_KEY_PREFIX)
