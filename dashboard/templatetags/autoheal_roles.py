"""Template filters for what a page shows each role: ``{% if user|has_ops %}``."""

from __future__ import annotations

from typing import Any

from django import template

from accounts.roles import is_admin, is_ops

register = template.Library()


@register.filter
def has_ops(user: Any) -> bool:
    """The ops or the admin role: the Command Center, the console, the audit API."""
    return is_ops(user)


@register.filter
def has_admin(user: Any) -> bool:
    """The admin role: the Django admin and the switch."""
    return is_admin(user)
