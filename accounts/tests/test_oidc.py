"""OpenID Connect against a real provider (scripts/oidc): browser login and API access tokens."""

from __future__ import annotations

import html
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from accounts.models import Identity
from accounts.roles import user_roles
from accounts.tests.conftest import API_AUDIENCE, REDIRECT_URI, Provider

pytestmark = [pytest.mark.oidc, pytest.mark.django_db]

_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.I)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', re.I)


def _login_at_provider(client: Any, login: str) -> Any:
    """Drive the code flow: Autoheal -> provider login and consent pages -> Autoheal's callback."""
    start = client.get("/oidc/authenticate/?next=/audit")
    assert start.status_code == 302
    browser = requests.Session()
    url = start["Location"]
    response = browser.get(url, allow_redirects=False, timeout=10)
    for _ in range(12):
        if response.is_redirect:
            url = urljoin(url, response.headers["Location"])
            if url.startswith(REDIRECT_URI):
                parts = urlsplit(url)
                return client.get(parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()})
            response = browser.get(url, allow_redirects=False, timeout=10)
            continue
        form = _FORM.search(response.text)
        assert form, f"no form on the provider's page: {response.status_code}"
        fields = {name: html.unescape(value) for name, value in _HIDDEN.findall(response.text)}
        if fields.get("prompt") == "login":
            fields.update(login=login, password="any")
        url = urljoin(url, html.unescape(form.group(1)))
        response = browser.post(url, data=fields, allow_redirects=False, timeout=10)
    pytest.fail("the provider's login flow did not come back to Autoheal")


def test_code_flow_login_opens_a_session_with_roles_from_the_claim(
    client: Any, oidc_settings: Any, oidc_provider: Provider
) -> None:
    login = f"ops-{uuid.uuid4().hex[:6]}"
    response = _login_at_provider(client, login)
    assert response.status_code == 302
    assert response["Location"] == "/audit"
    identity = Identity.objects.select_related("user").get(sub=login)
    assert identity.issuer == oidc_provider.issuer
    assert set(identity.user.groups.values_list("name", flat=True)) == {"ops"}
    assert client.get("/audit").status_code == 200


def test_roles_follow_the_provider_at_each_login(client: Any, oidc_settings: Any, oidc_provider: Provider) -> None:
    login = f"sam-{uuid.uuid4().hex[:6]}"
    oidc_provider.set_roles(login, ["ops", "admin"])
    _login_at_provider(client, login)
    user = Identity.objects.get(sub=login).user
    assert set(user.groups.values_list("name", flat=True)) == {"ops", "admin"}
    assert user.is_staff
    client.logout()

    oidc_provider.set_roles(login, ["ops"])
    _login_at_provider(client, login)
    user.refresh_from_db()
    assert set(user.groups.values_list("name", flat=True)) == {"ops"}
    assert not user.is_staff
    assert Identity.objects.filter(sub=login).count() == 1


def test_a_subject_without_a_role_gets_no_session(client: Any, oidc_settings: Any, oidc_provider: Provider) -> None:
    login = f"nobody-{uuid.uuid4().hex[:6]}"
    response = _login_at_provider(client, login)
    assert response.status_code == 302
    assert response["Location"].endswith("?sso=refused")
    assert not Identity.objects.filter(sub=login).exists()
    assert client.get("/audit").status_code in (401, 403)
    page = client.get(response["Location"])
    assert b"ops" in page.content and b"admin" in page.content


def test_a_role_removed_at_the_provider_is_removed_here(
    client: Any, oidc_settings: Any, oidc_provider: Provider
) -> None:
    login = f"ex-{uuid.uuid4().hex[:6]}"
    oidc_provider.set_roles(login, ["admin"])
    _login_at_provider(client, login)
    client.logout()
    oidc_provider.set_roles(login, [])
    response = _login_at_provider(client, login)
    assert response["Location"].endswith("?sso=refused")
    user = Identity.objects.get(sub=login).user
    assert not user.groups.filter(name__in=["ops", "admin"]).exists()


def test_users_are_matched_on_sub_not_on_a_same_named_local_account(
    client: Any, oidc_settings: Any, oidc_provider: Provider, make_user: Any
) -> None:
    login = f"ops-{uuid.uuid4().hex[:6]}"
    local = make_user(login, ["admin"])
    _login_at_provider(client, login)
    identity = Identity.objects.get(sub=login)
    assert identity.user_id != local.pk
    assert identity.user.username != login


def test_oidc_routes_are_absent_without_configuration(client: Any) -> None:
    assert client.get("/oidc/authenticate/").status_code == 404


# --- API access tokens --------------------------------------------------------------------------


def test_client_credentials_token_is_accepted_with_its_role(
    client: Any, oidc_settings: Any, oidc_provider: Provider
) -> None:
    token = oidc_provider.token("machine-ops")
    response = client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    identity = Identity.objects.get(sub="machine-ops")
    assert user_roles(identity.user) == {"ops"}


def test_expired_token_is_refused(client: Any, oidc_settings: Any, oidc_provider: Provider) -> None:
    oidc_settings.OIDC_JWT_LEEWAY_SECONDS = 0
    token = oidc_provider.token("machine-short")  # lives one second
    time.sleep(2.2)
    response = client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert "expired" in response.json()["error"]


def test_token_for_another_audience_is_refused(client: Any, oidc_settings: Any, oidc_provider: Provider) -> None:
    token = oidc_provider.token("machine-admin", resource="urn:other:api")
    response = client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert "audience" in response.json()["error"]


def test_token_signed_by_another_key_is_refused(client: Any, oidc_settings: Any, oidc_provider: Provider) -> None:
    genuine = oidc_provider.token("machine-admin")
    header = jwt.get_unverified_header(genuine)
    claims = jwt.decode(genuine, options={"verify_signature": False})
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # Same kid, same claims, the wrong key: only the signature gives it away.
    forged = jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": header["kid"]})
    response = client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {forged}")
    assert response.status_code == 401
    assert "signature" in response.json()["error"]
    unknown_kid = jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": "not-published"})
    assert client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {unknown_kid}").status_code == 401


def test_symmetric_and_unsigned_tokens_are_refused(client: Any, oidc_settings: Any, oidc_provider: Provider) -> None:
    genuine = oidc_provider.token("machine-admin")
    claims = jwt.decode(genuine, options={"verify_signature": False})
    jwks = requests.get(f"{oidc_provider.issuer}/jwks", timeout=10).json()
    # The classic confusion: HS256 "signed" with the provider's public key material.
    hs = jwt.encode(claims, str(jwks["keys"][0]["n"]), algorithm="HS256", headers={"kid": jwks["keys"][0]["kid"]})
    none = jwt.encode(claims, None, algorithm="none")
    for token in (hs, none):
        response = client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 401
        assert "algorithm" in response.json()["error"] or "JWT" in response.json()["error"]


def test_token_lacking_a_role_is_refused(client: Any, oidc_settings: Any, oidc_provider: Provider) -> None:
    token = oidc_provider.token("machine-none")
    response = client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 403
    assert "role" in response.json()["error"]


def test_tokens_are_refused_when_no_api_audience_is_configured(
    client: Any, oidc_settings: Any, oidc_provider: Provider
) -> None:
    token = oidc_provider.token("machine-admin")
    oidc_settings.OIDC_API_AUDIENCE = ""
    assert client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_keys_are_refetched_once_when_an_unknown_kid_appears(
    oidc_settings: Any, oidc_provider: Provider, monkeypatch: Any
) -> None:
    from accounts import tokens

    calls: list[str] = []
    real_get = requests.get

    def counting_get(url: str, *args: Any, **kwargs: Any) -> Any:
        if url.endswith("/jwks"):
            calls.append(url)
        return real_get(url, *args, **kwargs)

    # Counting calls to the real provider (not replacing it) shows the refetch is rate-limited.
    monkeypatch.setattr(tokens.requests, "get", counting_get)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": oidc_provider.issuer, "aud": API_AUDIENCE, "sub": "x", "exp": int(time.time()) + 60}
    for i in range(5):
        forged = jwt.encode(claims, key, algorithm="RS256", headers={"kid": f"rotated-{i}"})
        with pytest.raises(tokens.TokenError):
            tokens.verify_access_token(forged)
    assert len(calls) == 1
    # A genuine token still verifies from the cache.
    assert tokens.verify_access_token(oidc_provider.token("machine-ops"))["sub"] == "machine-ops"
    assert len(calls) == 1


def test_a_known_subject_costs_one_query_per_request(
    oidc_settings: Any, oidc_provider: Provider, django_assert_num_queries: Any
) -> None:
    from django.test import RequestFactory

    from accounts.authentication import bearer_user

    token = oidc_provider.token("machine-admin")
    factory = RequestFactory()
    bearer_user(factory.get("/audit", HTTP_AUTHORIZATION=f"Bearer {token}"))
    with django_assert_num_queries(1):
        user = bearer_user(factory.get("/audit", HTTP_AUTHORIZATION=f"Bearer {token}"))
    assert user_roles(user) == {"admin"}


@pytest.mark.parametrize(
    ("claim", "claims", "expected"),
    [
        ("roles", {"roles": ["ops", "viewer"]}, {"ops"}),
        ("roles", {"groups": ["/admin", "staff"]}, {"admin"}),
        ("realm_access.roles", {"realm_access": {"roles": ["admin", "ops"]}}, {"admin", "ops"}),
        ("roles", {"roles": "ops admin"}, {"ops", "admin"}),
        ("roles", {"roles": []}, set()),
        ("roles", {"roles": {"ops": True}}, set()),
        ("roles", {}, set()),
    ],
)
def test_roles_are_read_from_the_configured_claim(settings: Any, claim: str, claims: Any, expected: set[str]) -> None:
    from accounts.oidc import roles_from_claims

    settings.OIDC_ROLES_CLAIM = claim
    assert roles_from_claims(claims) == expected


def test_explicit_endpoints_work_without_discovery(client: Any, oidc_settings: Any, oidc_provider: Provider) -> None:
    issuer = oidc_provider.issuer
    oidc_settings.OIDC_OP_DISCOVERY_URL = ""
    oidc_settings.OIDC_OP_ISSUER = issuer
    oidc_settings.OIDC_OP_AUTHORIZATION_ENDPOINT = f"{issuer}/auth"
    oidc_settings.OIDC_OP_TOKEN_ENDPOINT = f"{issuer}/token"
    oidc_settings.OIDC_OP_USER_ENDPOINT = f"{issuer}/me"
    oidc_settings.OIDC_OP_JWKS_ENDPOINT = f"{issuer}/jwks"
    login = f"admin-{uuid.uuid4().hex[:6]}"
    assert _login_at_provider(client, login)["Location"] == "/audit"
    assert user_roles(Identity.objects.get(sub=login).user) == {"admin"}
    token = oidc_provider.token("machine-admin")
    assert client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_an_unreachable_provider_fails_closed_with_a_clear_answer(client: Any, oidc_settings: Any) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    oidc_settings.OIDC_OP_DISCOVERY_URL = f"http://127.0.0.1:{closed}/.well-known/openid-configuration"
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 503
    assert "identity provider is unavailable" in response.json()["error"]
    forged = jwt.encode({"sub": "x"}, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")
    response = client.get("/audit", HTTP_AUTHORIZATION=f"Bearer {forged}")
    assert response.status_code == 401
    assert "discovery failed" in response.json()["error"]
