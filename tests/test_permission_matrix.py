"""Who may call what (docs/interface.md, HTTP): every route x method x kind of caller, and the headers.

``MATRIX`` is the table. ``test_every_route_is_in_the_matrix`` reads the URLconf and fails when a
route exists that the table does not cover, so a new endpoint cannot ship without deciding who
may call it. Rows for routes that are documented but not built yet generate no cases while their
path does not resolve (CI forbids skipped tests, so they are left out rather than skipped); once
the route exists its cases are generated and enforced.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import Resolver404, URLPattern, URLResolver, get_resolver, resolve

from accounts.tests.conftest import make_api_key, make_user, oidc_provider, oidc_settings  # noqa: F401

PUBLIC = "public"  # anyone, anonymous included
OPS = "ops"  # the ops or the admin role
ADMIN = "admin"  # the admin role only
OWN_TOKEN = "own-token"  # its own token (the webhook's); no user role opens it

# URLconf route -> (a concrete path, {method: who})
MATRIX: dict[str, tuple[str, dict[str, str]]] = {
    "": ("/", {"GET": PUBLIC}),
    "readyz": ("/readyz", {"GET": PUBLIC}),
    # /metrics is open unless AUTOHEAL_METRICS_TOKEN is set (accounts/tests/test_secrets.py).
    "metrics": ("/metrics", {"GET": PUBLIC}),
    "alert": ("/alert", {"POST": OWN_TOKEN}),
    "audit": ("/audit", {"GET": OPS}),
    "events": ("/events", {"GET": OPS}),
    "console": ("/console", {"GET": OPS}),
    "ack": ("/ack", {"POST": OPS}),
    "api/switch": ("/api/switch", {"GET": OPS, "POST": ADMIN}),
    "api/schema/": ("/api/schema/", {"GET": OPS}),
    "api/docs/": ("/api/docs/", {"GET": OPS}),
    "favicon.ico": ("/favicon.ico", {"GET": PUBLIC}),
    "ops/": ("/ops/", {"GET": OPS}),
    "ops/switch": ("/ops/switch", {"POST": ADMIN}),
    "ops/ack": ("/ops/ack", {"POST": OPS}),
    "ops/actions/<int:job_id>/false-positive": ("/ops/actions/1/false-positive", {"POST": OPS}),
    # Approving lets a destructive action run: the admin role, like the kill switch.
    "api/jobs/<str:job_id>/approve": ("/api/jobs/1/approve", {"POST": ADMIN}),
    "api/jobs/<str:job_id>/deny": ("/api/jobs/1/deny", {"POST": ADMIN}),
    "ops/jobs/<int:job_id>/decide": ("/ops/jobs/1/decide", {"POST": ADMIN}),
    "ops/notify-test": ("/ops/notify-test", {"POST": ADMIN}),
    "admin/": ("/admin/", {"GET": ADMIN}),
    "accounts/login/": ("/accounts/login/", {"GET": PUBLIC}),
    "admin/login/": ("/admin/login/", {"GET": PUBLIC}),
    "accounts/logout/": ("/accounts/logout/", {"POST": PUBLIC}),
    # 404 unless OpenID login is configured; with it, the redirect to the provider is public.
    "oidc/authenticate/": ("/oidc/authenticate/", {"GET": PUBLIC}),
    "oidc/callback/": ("/oidc/callback/", {"GET": PUBLIC}),
    # The fleet: operators read the agents; the agent API wants a host's agent token, which no
    # user role, session or API key replaces (fleet/tests cover the tokens themselves).
    "api/agents": ("/api/agents", {"GET": OPS}),
    "api/agent/hello": ("/api/agent/hello", {"POST": OWN_TOKEN}),
    "api/agent/inventory": ("/api/agent/inventory", {"PUT": OWN_TOKEN, "POST": OWN_TOKEN}),
    "api/agent/events": ("/api/agent/events", {"POST": OWN_TOKEN}),
    "api/agent/jobs/next": ("/api/agent/jobs/next", {"GET": OWN_TOKEN}),
    "api/agent/jobs/<int:job_id>/start": ("/api/agent/jobs/1/start", {"POST": OWN_TOKEN}),
    "api/agent/jobs/<int:job_id>/refuse": ("/api/agent/jobs/1/refuse", {"POST": OWN_TOKEN}),
    "api/agent/jobs/<int:job_id>/heartbeat": ("/api/agent/jobs/1/heartbeat", {"POST": OWN_TOKEN}),
    "api/agent/jobs/<int:job_id>/evidence": ("/api/agent/jobs/1/evidence", {"POST": OWN_TOKEN}),
    "api/agent/jobs/<int:job_id>/report": ("/api/agent/jobs/1/report", {"POST": OWN_TOKEN}),
}
# Included URLconfs covered as a whole by one row (their own pages share the row's rule).
PREFIX_ROWS = ("admin/",)

CALLERS = ["anonymous", "no-role", "ops", "admin", "apikey-ops", "apikey-admin", "jwt-ops", "jwt-admin"]
ROLE_OF = {
    "anonymous": None,
    "no-role": None,
    "ops": OPS,
    "admin": ADMIN,
    "apikey-ops": OPS,
    "apikey-admin": ADMIN,
    "jwt-ops": OPS,
    "jwt-admin": ADMIN,
}


def _routes(patterns: list[Any], prefix: str = "") -> Iterator[str]:
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if route in PREFIX_ROWS:
                yield route
            else:
                yield from _routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield route


def test_every_route_is_in_the_matrix() -> None:
    missing = sorted(set(_routes(get_resolver().url_patterns)) - set(MATRIX))
    assert not missing, f"routes without a row in MATRIX (decide who may call them): {missing}"


def _resolves(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def _routed() -> list[str]:
    return [route for route, (path, _) in MATRIX.items() if _resolves(path)]


def _cases() -> Iterator[Any]:
    for route in _routed():
        path, methods = MATRIX[route]
        for method, rule in methods.items():
            for caller in CALLERS:
                marks = [pytest.mark.oidc] if caller.startswith("jwt") else []
                yield pytest.param(path, method, rule, caller, id=f"{method} {path} as {caller}", marks=marks)


@pytest.fixture
def as_caller(request: pytest.FixtureRequest, client: Any, make_user: Any, make_api_key: Any) -> Any:  # noqa: F811
    """A test client acting as ``caller``: session, API key or provider JWT."""

    def act(caller: str) -> dict[str, str]:
        if caller == "no-role":
            client.force_login(make_user("plain", []))
        elif caller in ("ops", "admin"):
            client.force_login(make_user(f"user-{caller}", [caller]))
        elif caller.startswith("apikey-"):
            role = caller.split("-")[1]
            return {"HTTP_AUTHORIZATION": f"Bearer {make_api_key(f'matrix-{role}', role)}"}
        elif caller.startswith("jwt-"):
            provider = request.getfixturevalue("oidc_provider")
            request.getfixturevalue("oidc_settings")
            return {"HTTP_AUTHORIZATION": f"Bearer {provider.token('machine-' + caller.split('-')[1])}"}
        return {}

    return act


def test_anonymous_api_callers_get_a_bearer_challenge(client: Any) -> None:
    response = client.get("/audit")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def _denied(response: Any) -> bool:
    if response.status_code in (401, 403):
        return True
    return response.status_code == 302 and "login" in response.get("Location", "")


def _call(client: Any, method: str, path: str, headers: dict[str, str]) -> Any:
    if method == "GET":
        return client.get(path, **headers)
    # An empty object: enough to pass authorization, never a valid change.
    return client.generic(method, path, data=json.dumps({}), content_type="application/json", **headers)


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "method", "rule", "caller"), list(_cases()))
def test_permission_matrix(path: str, method: str, rule: str, caller: str, client: Any, as_caller: Any) -> None:
    headers = as_caller(caller)
    # A streaming answer (/events) is never iterated, so it never starts; closing it by hand would
    # fire request_finished and close the test's database connection.
    response = _call(client, method, path, headers)
    assert response.status_code < 500, f"{method} {path} as {caller}: {response.status_code}"
    role = ROLE_OF[caller]
    if rule == PUBLIC:
        # A public page may redirect (the OpenID callback without a code goes to the login
        # page), but it never refuses.
        assert response.status_code not in (401, 403), f"{method} {path} as {caller}: {response.status_code}"
        return
    if rule == OWN_TOKEN:
        # No user role or API key opens the webhook: it wants the webhook token.
        assert response.status_code == 401, f"{method} {path} as {caller}: {response.status_code}"
        return
    should_pass = role in (OPS, ADMIN) if rule == OPS else role == ADMIN
    assert _denied(response) != should_pass, (
        f"{method} {path} as {caller}: {response.status_code} {'denied' if _denied(response) else 'allowed'}"
    )


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@pytest.mark.django_db
@pytest.mark.parametrize("caller", ["anonymous", "admin"])
@pytest.mark.parametrize("route", _routed())
def test_security_headers_on_every_route(route: str, caller: str, client: Any, as_caller: Any, settings: Any) -> None:
    path, methods = MATRIX[route]
    # Production values (settings.py turns these on with AUTOHEAL_ENV=production); HSTS is only
    # ever sent over HTTPS, so the request is made as a secure one.
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    headers = as_caller(caller)
    for method in methods:
        response = client.generic(method, path, secure=True, **headers)
        for name, value in SECURITY_HEADERS.items():
            assert response.get(name) == value, f"{method} {path}: {name}={response.get(name)}"
        assert "default-src 'self'" in response.get("Content-Security-Policy", ""), f"{method} {path}: CSP"
        assert response.get("Strict-Transport-Security", "").startswith("max-age=31536000"), f"{method} {path}"
