"""Read-only admin pages for API keys and identities (keys are created with autoheal_apikey)."""

from __future__ import annotations

from django.contrib import admin

from accounts.models import ApiKey, Identity
from autoheal_site.admin_base import ReadOnlyAdmin


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = ["name", "role", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    exclude = ["salt", "key_hash"]


@admin.register(Identity)
class IdentityAdmin(ReadOnlyAdmin):
    list_display = ["sub", "issuer", "user", "roles", "last_seen_at"]
