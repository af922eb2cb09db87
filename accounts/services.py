"""Writes of the accounts app: API keys, local users, and users behind OpenID identities."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import ApiKey, Identity
from accounts.roles import ADMIN, ROLES
from audit.services import audit_record

API_KEY_PREFIX = "ahk_"
_PREFIX_LEN = 12
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# last_used_at is a hint for people, not an access log: writing it on every request would put a
# row update on the hot path, so it is refreshed at most once a minute per key.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class AccountError(ValueError):
    """Bad input to an accounts service; the message says what to change."""


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    return role


def _key_hash(salt: str, secret: str) -> str:
    # The secret is 32 random bytes, so a fast salted SHA-256 is enough: there is no dictionary to
    # try and 2**256 guesses are out of reach. A slow password hash would only add its cost to
    # every API request. The salt keeps two databases' hashes of the same key different.
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def roles_set(*, user: Any, roles: Iterable[str]) -> None:
    """Make the user's ``ops``/``admin`` groups exactly ``roles``; other groups are left alone.

    Admins get the Django admin (``is_staff``); losing the role takes it away.
    """
    wanted = {r for r in roles if r in ROLES}
    current = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    if wanted - current:
        user.groups.add(*Group.objects.filter(name__in=wanted - current))
    if current - wanted:
        user.groups.remove(*Group.objects.filter(name__in=current - wanted))
    staff = ADMIN in wanted or user.is_superuser
    if user.is_staff != staff:
        user.is_staff = staff
        user.save(update_fields=["is_staff"])
    user._autoheal_roles = frozenset(wanted | ({ADMIN} if user.is_superuser else set()))


def apikey_create(*, name: str, role: str, created_by: str) -> tuple[ApiKey, str]:
    """Create an API key and its service user; return the key row and the key, shown only once.

    Audited as ``apikey_changed``; the audit event names the key, never its secret.
    """
    if not _NAME.match(name or ""):
        raise AccountError("name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    _check_role(role)
    User = get_user_model()
    prefix = secrets.token_hex(_PREFIX_LEN // 2)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    try:
        with transaction.atomic():
            if ApiKey.objects.filter(name=name).exists():
                raise AccountError(f"an API key named {name!r} already exists (revoked keys keep their name)")
            user = User.objects.create_user(username=f"{SERVICE_USER_PREFIX}{name}")
            user.set_unusable_password()
            user.save()
            roles_set(user=user, roles=[role])
            key = ApiKey.objects.create(
                name=name,
                role=role,
                prefix=prefix,
                salt=salt,
                key_hash=_key_hash(salt, secret),
                user=user,
                created_by=created_by[:150],
            )
            audit_record(
                kind="apikey_changed",
                actor=created_by,
                target=name,
                message=f"API key {name} created with role {role}",
                data={"action": "created", "name": name, "role": role, "prefix": prefix},
            )
    except IntegrityError:
        raise AccountError(f"an API key or user named {name!r} already exists") from None
    return key, f"{API_KEY_PREFIX}{prefix}_{secret}"


def apikey_revoke(*, name: str, actor: str) -> ApiKey:
    """Revoke a key at once; its service user stays (inactive) so past audit events still name it."""
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().select_related("user").filter(name=name).first()
        if key is None:
            raise AccountError(f"no API key named {name!r}")
        if key.revoked_at is not None:
            raise AccountError(f"API key {name!r} was already revoked at {key.revoked_at.isoformat()}")
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        key.user.is_active = False
        key.user.save(update_fields=["is_active"])
        audit_record(
            kind="apikey_changed",
            actor=actor,
            target=name,
            message=f"API key {name} revoked",
            data={"action": "revoked", "name": name, "role": key.role, "prefix": key.prefix},
        )
    return key


def apikey_check(*, presented: str) -> Any | None:
    """The service user of a valid, unrevoked key, or None. Cheap: one indexed read, rarely a write."""
    if not presented.startswith(API_KEY_PREFIX):
        return None
    body = presented[len(API_KEY_PREFIX) :]
    prefix, sep, secret = body[:_PREFIX_LEN], body[_PREFIX_LEN : _PREFIX_LEN + 1], body[_PREFIX_LEN + 1 :]
    if sep != "_" or not secret:
        return None
    key = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
    if key is None or key.revoked_at is not None or not key.user.is_active:
        return None
    if not hmac.compare_digest(key.key_hash, _key_hash(key.salt, secret)):
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    user: Any = key.user
    # The key's role is authoritative; this saves the group query on every request.
    user._autoheal_roles = frozenset({key.role})
    return user


def _user_audit(*, actor: str, username: str, action: str, message: str, **data: Any) -> None:
    audit_record(
        kind="user_changed",
        actor=actor,
        target=username,
        message=message,
        data={"action": action, "username": username, **data},
    )


def _validated_password(password: str, user: Any) -> None:
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise AccountError("password refused: " + " ".join(exc.messages)) from None


def local_user_create(*, username: str, role: str, password: str, actor: str = "cli") -> Any:
    """Create a local account (the embedded login) in the given role; the password is validated.

    Audited as ``user_changed`` (``data.action: created``) with the actor; never the password.
    """
    _check_role(role)
    User = get_user_model()
    if not username or User.objects.filter(username=username).exists():
        raise AccountError(f"a user named {username!r} already exists" if username else "a user name is needed")
    try:
        User.username_validator(username)
    except ValidationError as exc:
        raise AccountError(" ".join(exc.messages)) from None
    _validated_password(password, User(username=username))
    with transaction.atomic():
        user = User.objects.create_user(username=username, password=password)
        roles_set(user=user, roles=[role])
        _user_audit(actor=actor, username=username, action="created", message=f"user {username} created", role=role)
    return user


def _local_user_for_update(username: str) -> Any:
    """The user row, locked; API-key service users are refused (autoheal_apikey manages them)."""
    if username.startswith("apikey:"):
        raise AccountError(f"{username!r} is an API key's user: use manage.py autoheal_apikey")
    user = get_user_model().objects.select_for_update().filter(username=username).first()
    if user is None:
        raise AccountError(f"no user named {username!r}")
    return user


def local_user_set_password(*, username: str, password: str, actor: str) -> Any:
    """Set a user's password (validated); their open sessions end. Audited, never the password."""
    with transaction.atomic():
        user = _local_user_for_update(username)
        _validated_password(password, user)
        user.set_password(password)
        user.save(update_fields=["password"])
        _user_audit(actor=actor, username=username, action="password_set", message=f"password of {username} set")
    return user


def local_user_set_role(*, username: str, role: str, actor: str) -> Any:
    """Give a user exactly one role, ``ops`` or ``admin``. Audited with the old and new roles.

    A user who logs in through OpenID Connect gets their roles from the provider again at the next
    login; the change holds until then.
    """
    _check_role(role)
    with transaction.atomic():
        user = _local_user_for_update(username)
        before = sorted(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        if before == [role]:
            return user
        roles_set(user=user, roles=[role])
        _user_audit(
            actor=actor,
            username=username,
            action="role_set",
            message=f"role of {username} set to {role}",
            old=before,
            new=[role],
        )
    return user


def local_user_set_active(*, username: str, active: bool, actor: str) -> Any:
    """Disable a user (no login, sessions and their API use refused from the next request) or
    enable them again. Their audit history stays. Audited; a no-op change is not."""
    with transaction.atomic():
        user = _local_user_for_update(username)
        if user.is_active == active:
            return user
        user.is_active = active
        user.save(update_fields=["is_active"])
        action = "enabled" if active else "disabled"
        _user_audit(actor=actor, username=username, action=action, message=f"user {username} {action}")
    return user


# Usernames Autoheal gives its own kinds of account: an API key's service user is "apikey:NAME".
SERVICE_USER_PREFIX = "apikey:"
RESERVED_USERNAME_PREFIXES = (SERVICE_USER_PREFIX,)
# What a name from an identity provider may keep: the characters Django allows in local usernames
# (so never ":", the separator of the reserved forms); anything else becomes "-".
_IDENTITY_NAME_UNSAFE = re.compile(r"[^\w.@+-]")


def identity_username_base(raw: str) -> str:
    """A provider's name for someone, made safe: never a reserved form such as ``apikey:NAME``.

    ``preferred_username`` and ``email`` are chosen by the user at many providers; taken as they
    are, ``apikey:ci-deploy`` would impersonate that API key in the audit trail and block the name.
    """
    name = _IDENTITY_NAME_UNSAFE.sub("-", raw.strip())
    while name.lower().startswith(tuple(p.rstrip(":") + "-" for p in RESERVED_USERNAME_PREFIXES)):
        name = "user-" + name
    return name


def _free_username(base: str, issuer: str, sub: str) -> str:
    User = get_user_model()
    base = identity_username_base(base or sub)[:120] or "user"
    if not User.objects.filter(username=base).exists():
        return base
    # Never take over an existing account with the same name: a subject is a new person until
    # proven otherwise, so it gets a name derived from (issuer, sub).
    return f"{base}~{hashlib.sha256(f'{issuer} {sub}'.encode()).hexdigest()[:10]}"


def identity_user(
    *, issuer: str, sub: str, roles: Iterable[str], claims: Mapping[str, Any], login: bool
) -> AbstractBaseUser | None:
    """The local user for an OpenID subject, created on first sight, groups synced to ``roles``.

    A subject with neither role gets no access: at login (``login=True``) the answer is None and
    nothing is created, but an existing user's groups are still emptied so a revoked role is gone
    everywhere (sessions included) at the next login attempt.
    """
    wanted = sorted({r for r in roles if r in ROLES})
    now = timezone.now()
    identity = Identity.objects.select_related("user").filter(issuer=issuer, sub=sub).first()
    if identity is None:
        if not wanted:
            return None
        User = get_user_model()
        base = str(claims.get("preferred_username") or claims.get("email") or claims.get("client_id") or sub)
        try:
            with transaction.atomic():
                new_user = User.objects.create_user(username=_free_username(base, issuer, sub))
                new_user.set_unusable_password()
                new_user.save()
                identity = Identity.objects.create(user=new_user, issuer=issuer, sub=sub, roles=[], last_seen_at=now)
        except IntegrityError:
            # Two first requests of the same subject at once: the other one created it.
            identity = Identity.objects.select_related("user").get(issuer=issuer, sub=sub)
    account: Any = identity.user
    if identity.roles != wanted or login:
        with transaction.atomic():
            roles_set(user=account, roles=wanted)
            Identity.objects.filter(pk=identity.pk).update(roles=wanted, last_seen_at=now)
    else:
        account._autoheal_roles = frozenset(set(wanted) | ({ADMIN} if account.is_superuser else set()))
    if not wanted:
        return None if login else account
    return account
