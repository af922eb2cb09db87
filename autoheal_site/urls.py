"""Autoheal's routes; see docs/interface.md (HTTP) for who may call what. Each app owns its urls.py."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("remediation.urls")),
    path("", include("audit.urls")),
    path("", include("dashboard.urls")),
    path("", include("accounts.urls")),
    path("", include("fleet.urls")),
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
]
