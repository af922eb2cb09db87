"""Routes of the audit app (included at the site root by autoheal_site/urls.py)."""

from csp.decorators import csp_update
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.roles import IsOps
from accounts.views import browser_login_redirect
from audit.api import AuditView

urlpatterns = [
    path("audit", AuditView.as_view(), name="audit"),
    # The schema and its docs are for operators; the docs page loads Swagger UI from this
    # server's static files (drf-spectacular-sidecar) and its script from a URL, never inline.
    # Swagger UI's stylesheet draws its icons as data: images, allowed on this page only.
    # A browser that is not signed in is sent to the login page, like /ops/ and /console;
    # API clients get the 401 JSON.
    path(
        "api/schema/",
        browser_login_redirect(SpectacularAPIView.as_view(permission_classes=[IsOps])),
        name="api-schema",
    ),
    path(
        "api/docs/",
        browser_login_redirect(
            csp_update({"img-src": ["'self'", "data:"]})(
                SpectacularSwaggerSplitView.as_view(
                    url_name="api-schema", permission_classes=[IsOps], template_name="audit/api_docs.html"
                )
            )
        ),
        name="api-docs",
    ),
]
