"""Routes of this app (included at the site root by autoheal_site/urls.py)."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
