"""Routes of the accounts app: login and logout, local and OpenID (included at the site root)."""

from django.contrib.auth.views import LogoutView
from django.urls import path

from accounts.oidc import OIDCCallbackView, OIDCLoginStartView
from accounts.views import AutohealLoginView

urlpatterns = [
    path("accounts/login/", AutohealLoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    # The names are mozilla-django-oidc's; these views answer 404 when OpenID is not configured.
    path("oidc/authenticate/", OIDCLoginStartView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", OIDCCallbackView.as_view(), name="oidc_authentication_callback"),
]
