"""OpenAPI descriptions of the bearer schemes (drf-spectacular reads these on import)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `manage.py autoheal_apikey create` (`ahk_…`).",
        }


class JWTScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.JWTAuthentication"
    name = "jwt"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token from the OpenID provider for the API audience.",
        }


_REFUSALS = {
    "400": "The request is malformed: the `error` says what to change.",
    "401": "No valid credentials: log in, or send `Authorization: Bearer` with an API key or an access token.",
    "403": "Authenticated, but without the role this operation needs (ops, or admin for changes).",
    "429": "Over the rate limit (AUTOHEAL_RATE_LIMIT); `Retry-After` says when to try again.",
}
_ERROR_BODY = {
    "type": "object",
    "description": "`error` from Autoheal's middleware, `detail` from the API views.",
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}


def document_refusals(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: every secured operation documents 400, 401, 403 and 429.

    An operation that documents its own 400 (naming the field) keeps it.

    These answers come from authentication, permissions and the rate limiter, which views do not
    declare themselves; without them a client (or schemathesis) would meet undocumented codes.
    """
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if not operation.get("security", result.get("security")):
                continue
            for code, description in _REFUSALS.items():
                operation["responses"].setdefault(
                    code, {"description": description, "content": {"application/json": {"schema": _ERROR_BODY}}}
                )
            operation["responses"]["429"].setdefault("headers", {"Retry-After": {"schema": {"type": "integer"}}})
    return result
