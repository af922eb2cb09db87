"""Access-token verification against a JWKS served on loopback: key rotation, ES256, bad keys."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from accounts import tokens

AUDIENCE = "urn:autoheal:api"


class JWKSServer:
    """A tiny JWKS endpoint whose key set the test changes, counting how often it is fetched."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, key: Any, kid: str, alg: str) -> None:
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
        self.keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks(settings: Any) -> Iterator[JWKSServer]:
    server = JWKSServer()
    settings.OIDC_API_AUDIENCE = AUDIENCE
    settings.OIDC_OP_DISCOVERY_URL = ""
    settings.OIDC_OP_JWKS_ENDPOINT = server.url
    settings.OIDC_OP_ISSUER = server.issuer
    tokens.forget_keys()
    yield server
    server.stop()
    tokens.forget_keys()


def _token(server: JWKSServer, key: Any, kid: str, alg: str, **claims: Any) -> str:
    body = {"iss": server.issuer, "aud": AUDIENCE, "sub": "svc", "exp": int(time.time()) + 300, "roles": ["ops"]}
    body.update(claims)
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def test_a_rotated_key_is_picked_up_from_the_provider(jwks: JWKSServer, monkeypatch: Any) -> None:
    old = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.publish(old, "old", "RS256")
    assert tokens.verify_access_token(_token(jwks, old, "old", "RS256"))["sub"] == "svc"
    new = ec.generate_private_key(ec.SECP256R1())
    jwks.publish(new, "new", "ES256")
    # The provider rotated a moment ago; let the refetch interval pass without waiting for it.
    monkeypatch.setattr(tokens, "JWKS_MIN_REFETCH_SECONDS", 0)
    assert tokens.verify_access_token(_token(jwks, new, "new", "ES256"))["sub"] == "svc"
    assert jwks.fetches == 2
    # Both keys stay usable from the cache: no fetch per request.
    tokens.verify_access_token(_token(jwks, old, "old", "RS256"))
    tokens.verify_access_token(_token(jwks, new, "new", "ES256"))
    assert jwks.fetches == 2


def test_a_token_whose_algorithm_does_not_match_its_key_is_refused(jwks: JWKSServer) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.publish(rsa_key, "k1", "RS256")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(tokens.TokenError, match="does not match its key"):
        tokens.verify_access_token(_token(jwks, ec_key, "k1", "ES256"))


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iss": "http://127.0.0.1:1"}, "another issuer"),
        ({"aud": "urn:someone-else"}, "another audience"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
    ],
)
def test_claims_are_checked(jwks: JWKSServer, claims: dict[str, Any], reason: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.publish(key, "k", "RS256")
    with pytest.raises(tokens.TokenError, match=reason):
        tokens.verify_access_token(_token(jwks, key, "k", "RS256", **claims))


def test_a_token_without_expiry_is_refused(jwks: JWKSServer) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.publish(key, "k", "RS256")
    token = jwt.encode(
        {"iss": jwks.issuer, "aud": AUDIENCE, "sub": "svc"}, key, algorithm="RS256", headers={"kid": "k"}
    )
    with pytest.raises(tokens.TokenError):
        tokens.verify_access_token(token)
