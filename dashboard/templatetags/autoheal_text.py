"""``{{ value|visible }}``: alert-supplied text with control characters shown as ``\\uXXXX``."""

from __future__ import annotations

from django import template

from autoheal_site.text import visible as _visible

register = template.Library()


@register.filter
def visible(value: object) -> str:
    """The value escaped by ``autoheal_site.text.visible``; HTML escaping still applies after it."""
    return _visible(value)
