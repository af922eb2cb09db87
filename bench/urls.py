"""Autoheal's routes plus the no-op baseline view (benchmark servers only)."""

from django.urls import include, path

from bench.noop import NoopView

urlpatterns = [
    path("bench/noop", NoopView.as_view()),
    path("", include("autoheal_site.urls")),
]
