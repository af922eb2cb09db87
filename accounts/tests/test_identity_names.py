"""A name from an identity provider never takes a reserved form nor another account's name."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from accounts.services import apikey_check, apikey_create, identity_user, local_user_create

pytestmark = pytest.mark.django_db
ISSUER = "https://idp.example"


def _user(sub: str, name: str) -> Any:
    claims = {"preferred_username": name}
    user = identity_user(issuer=ISSUER, sub=sub, roles=["ops"], claims=claims, login=True)
    assert user is not None
    return user


@pytest.mark.parametrize("name", ["apikey:ci-deploy", "APIKEY:ci-deploy", "apikey-ci-deploy", " apikey:x:y", "a:b"])
def test_a_provider_name_never_takes_the_api_key_form(name: str) -> None:
    user = _user("sub-1", name)
    assert ":" not in user.username
    assert not user.username.lower().startswith(("apikey:", "apikey-"))


def test_a_provider_name_cannot_impersonate_or_block_an_api_key() -> None:
    key, secret = apikey_create(name="ci-deploy", role="ops", created_by="admin")
    impostor = _user("sub-2", "apikey:ci-deploy")
    assert impostor.pk != key.user_id
    assert impostor.username != "apikey:ci-deploy"
    assert apikey_check(presented=secret).pk == key.user_id
    # The other order: a provider user first, then a key of that name can still be created.
    _user("sub-3", "apikey:release")
    released, _ = apikey_create(name="release", role="ops", created_by="admin")
    assert released.user.username == "apikey:release"


def test_a_provider_name_never_takes_over_a_local_account() -> None:
    local = local_user_create(username="alice", role="admin", password="a-long-passphrase-4-tests")
    remote = _user("sub-4", "alice")
    assert remote.pk != local.pk and remote.username != "alice"
    assert get_user_model().objects.get(username="alice").pk == local.pk
