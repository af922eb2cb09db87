"""Browser login through an OpenID Connect provider (mozilla-django-oidc, authorization code + PKCE).

Enabled when ``OIDC_RP_CLIENT_ID`` and either ``OIDC_OP_DISCOVERY_URL`` or the explicit endpoints
are set. Differences from the library's defaults, on purpose:

- users are matched on the ``sub`` claim (``accounts.Identity``), never on e-mail;
- the id_token is verified fully here (signature with an allowed algorithm, ``iss``, ``aud``,
  ``exp``, ``nonce``), not only its signature;
- the ``ops``/``admin`` groups follow the roles claim at each login, and a subject with neither
  role is refused: no session is opened and no user is created.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from accounts.provider import ProviderUnavailable, op_setting
from accounts.roles import ROLES
from accounts.services import identity_user
from accounts.tokens import TokenError, verify_jwt

logger = logging.getLogger(__name__)


def oidc_enabled() -> bool:
    """Browser login through the provider is configured."""
    return bool(
        getattr(settings, "OIDC_RP_CLIENT_ID", "")
        and (getattr(settings, "OIDC_OP_DISCOVERY_URL", "") or getattr(settings, "OIDC_OP_AUTHORIZATION_ENDPOINT", ""))
    )


def roles_from_claims(claims: Mapping[str, Any]) -> set[str]:
    """The Autoheal roles named by the configured claim (a dotted path; ``groups`` as a fallback)."""
    name = getattr(settings, "OIDC_ROLES_CLAIM", "roles") or "roles"
    for path in dict.fromkeys([name, "groups"]):
        value: Any = claims
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is None:
            continue
        items = value.replace(",", " ").split() if isinstance(value, str) else value
        if isinstance(items, list | tuple):
            return {str(item).strip().lstrip("/") for item in items} & set(ROLES)
    return set()


class AutohealOIDCBackend(OIDCAuthenticationBackend):
    """The mozilla-django-oidc backend, matching on ``sub`` and syncing roles (see module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The library reads every endpoint here; Django builds a backend for each request's
        # session lookup, so endpoints are resolved lazily instead (no network on that path).
        self.UserModel = get_user_model()
        self.OIDC_RP_IDP_SIGN_KEY = None

    @property
    def OIDC_OP_TOKEN_ENDPOINT(self) -> str:  # the library reads these attribute names
        return op_setting("OIDC_OP_TOKEN_ENDPOINT")

    @property
    def OIDC_OP_USER_ENDPOINT(self) -> str:
        return op_setting("OIDC_OP_USER_ENDPOINT")

    @property
    def OIDC_OP_JWKS_ENDPOINT(self) -> str:
        return op_setting("OIDC_OP_JWKS_ENDPOINT")

    @property
    def OIDC_RP_CLIENT_ID(self) -> str:
        return str(settings.OIDC_RP_CLIENT_ID)

    @property
    def OIDC_RP_CLIENT_SECRET(self) -> str:
        return str(settings.OIDC_RP_CLIENT_SECRET)

    @property
    def OIDC_RP_SIGN_ALGO(self) -> str:
        return str(getattr(settings, "OIDC_RP_SIGN_ALGO", "RS256"))

    def get_user(self, user_id: Any) -> Any:
        # The library's version returns deactivated users too; a deactivated account's sessions end.
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None

    def authenticate(self, request: Any, **kwargs: Any) -> Any:
        if not oidc_enabled():
            return None
        try:
            return super().authenticate(request, **kwargs)
        except (requests.RequestException, ProviderUnavailable, jwt.PyJWTError) as exc:
            logger.warning("OpenID login failed: %s", type(exc).__name__)
            return None

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        """Verify the id_token completely; the library itself checks only signature and nonce."""
        algorithm = self.OIDC_RP_SIGN_ALGO
        try:
            payload = verify_jwt(
                token,
                jwks_url=self.OIDC_OP_JWKS_ENDPOINT,
                issuer=op_setting("OIDC_OP_ISSUER"),
                audience=self.OIDC_RP_CLIENT_ID,
                algorithms=[algorithm],
            )
        except TokenError as exc:
            raise SuspiciousOperation(f"id_token refused: {exc}") from None
        if payload.get("nonce") != kwargs.get("nonce"):
            raise SuspiciousOperation("id_token refused: nonce mismatch")
        return payload

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        claims = dict(payload)
        if self.OIDC_OP_USER_ENDPOINT:
            try:
                userinfo = self.get_userinfo(access_token, id_token, payload)
            except requests.RequestException as exc:
                # Some providers refuse userinfo for access tokens minted for an API audience;
                # the verified id_token already carries what is needed.
                logger.info("OpenID userinfo unavailable, using the id_token claims: %s", type(exc).__name__)
                userinfo = {}
            if userinfo.get("sub") not in (None, payload["sub"]):
                raise SuspiciousOperation("userinfo is about another subject than the id_token")
            claims.update(userinfo)
        roles = roles_from_claims(claims)
        user = identity_user(issuer=payload["iss"], sub=payload["sub"], roles=roles, claims=claims, login=True)
        if user is None:
            logger.warning("OpenID login refused for subject %s: neither the ops nor the admin role", payload["sub"])
        return user


class OIDCLoginStartView(OIDCAuthenticationRequestView):
    """Redirect the browser to the provider (404 when OpenID login is not configured)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc_enabled():
            raise Http404("OpenID login is not configured")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = op_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except ProviderUnavailable as exc:
            return JsonResponse({"error": f"the identity provider is unavailable ({exc})"}, status=503)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


class OIDCCallbackView(OIDCAuthenticationCallbackView):
    """The provider's redirect back; a refused login lands on the login page with a message."""

    @property
    def failure_url(self) -> str:
        return f"{settings.LOGIN_URL}?sso=refused"

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc_enabled():
            raise Http404("OpenID login is not configured")
        return super().get(request)
