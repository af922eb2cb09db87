"""Who may call Autoheal: OpenID identities and API keys.

Roles themselves are the Django groups ``ops`` and ``admin`` (see accounts/roles.py).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from accounts.roles import ADMIN, OPS


class Identity(models.Model):
    """An OpenID Connect subject (``iss`` + ``sub``) bound to one local user.

    Users are matched on the subject, never on e-mail: an e-mail address can be reassigned or
    changed at the provider, the subject cannot. ``roles`` is what the provider said last time,
    so a bearer token carrying the same roles needs no group write.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="identities")
    issuer = models.CharField(max_length=255)
    sub = models.CharField(max_length=255)
    roles = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "identities"
        constraints = [models.UniqueConstraint(fields=["issuer", "sub"], name="identity_issuer_sub_unique")]

    def __str__(self) -> str:
        return f"{self.sub} at {self.issuer}"


class ApiKey(models.Model):
    """A revocable API key for scripts and CI, stored as a lookup prefix and a salted hash.

    Each key acts as its own service user (``apikey:NAME``) in the key's role group, so everything
    done with it is attributable in the audit trail.
    """

    ROLE_CHOICES = [(OPS, OPS), (ADMIN, ADMIN)]

    name = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=8, choices=ROLE_CHOICES)
    prefix = models.CharField(max_length=16, unique=True)
    salt = models.CharField(max_length=32)
    key_hash = models.CharField(max_length=64)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="api_key")
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.role}{', revoked' if self.revoked_at else ''})"

    @property
    def active(self) -> bool:
        return self.revoked_at is None
