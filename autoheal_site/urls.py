"""Autoheal's routes; see INTERFACE.md (HTTP) for who may call what."""

from django.contrib import admin
from django.urls import include, path

from remediation import views as remediation_views

urlpatterns = [
    path("", remediation_views.health, name="health"),
    path("readyz", remediation_views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("django_prometheus.urls")),
]
