"""Fixtures for the security tests: a real OpenID provider (scripts/oidc) and callers in each role."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import service_missing

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_DIR = ROOT / "scripts" / "oidc"
API_AUDIENCE = "urn:autoheal:api"
REDIRECT_URI = "http://testserver/oidc/callback/"


@dataclass
class Provider:
    """A running oidc-provider on loopback."""

    issuer: str
    process: subprocess.Popen[str]

    def token(self, client: str, resource: str = API_AUDIENCE) -> str:
        """A client-credentials access token (a JWT) for ``resource``."""
        response = requests.post(
            f"{self.issuer}/token",
            data={"grant_type": "client_credentials", "resource": resource},
            auth=(client, f"{client}-secret"),
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def set_roles(self, account: str, roles: list[str]) -> None:
        requests.post(
            f"{self.issuer}/test/roles", params={"account": account, "roles": ",".join(roles)}, timeout=10
        ).raise_for_status()


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[Provider]:
    """Start scripts/oidc/provider.mjs on a free loopback port; stopped by PID at the end."""
    node = shutil.which("node")
    if node is None:
        service_missing("OpenID provider: node is not installed")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        service_missing("OpenID provider: run `npm ci` in scripts/oidc")
    env = {**os.environ, "OIDC_TEST_REDIRECT_URIS": REDIRECT_URI}
    process = subprocess.Popen(
        [str(node), "provider.mjs", "0"],
        cwd=PROVIDER_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = None
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("listening "):
                port = int(line.split()[1])
                break
        if port is None:
            pytest.fail("the OpenID provider did not start")
        issuer = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield Provider(issuer=issuer, process=process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def oidc_settings(settings: Any, oidc_provider: Provider) -> Any:
    """Autoheal configured against the test provider: browser login and API tokens."""
    from accounts import provider, tokens

    settings.OIDC_RP_CLIENT_ID = "autoheal-web"
    settings.OIDC_RP_CLIENT_SECRET = "autoheal-web-secret"
    settings.OIDC_OP_DISCOVERY_URL = f"{oidc_provider.issuer}/.well-known/openid-configuration"
    settings.OIDC_RP_SCOPES = "openid profile roles"
    settings.OIDC_API_AUDIENCE = API_AUDIENCE
    settings.AUTHENTICATION_BACKENDS = [
        "accounts.oidc.AutohealOIDCBackend",
        "accounts.backends.RolePermissionBackend",
    ]
    settings.AUTOHEAL_LOCAL_LOGIN = False
    tokens.forget_keys()
    provider._discovery.clear()
    return settings


def _user(username: str, roles: list[str]) -> Any:
    from django.contrib.auth import get_user_model

    from accounts.services import roles_set

    user = get_user_model().objects.create_user(username=username)
    user.set_unusable_password()
    user.save()
    roles_set(user=user, roles=roles)
    return user


@pytest.fixture
def make_user(db: Any) -> Callable[..., Any]:
    """A local user in the given roles (``make_user("olga", ["ops"])``)."""
    return _user


@pytest.fixture
def make_api_key(db: Any) -> Callable[[str, str], str]:
    """Create an API key through the service and return the key itself."""
    from accounts.services import apikey_create

    def make(name: str, role: str) -> str:
        return apikey_create(name=name, role=role, created_by="test")[1]

    return make
