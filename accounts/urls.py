"""Routes of the accounts app: login and logout, local and OpenID (included at the site root)."""

from django.conf import settings
from django.contrib.auth.views import LogoutView
from django.urls import path
from django.views.generic import RedirectView

from accounts.oidc import OIDCCallbackView, OIDCLoginStartView
from accounts.views import AutohealLoginView

urlpatterns = [
    path("accounts/login/", AutohealLoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    # One way in for everything: the admin's own password form would bypass single sign-on and
    # the local-login switch, so it sends people to the login page (keeping ?next=).
    path("admin/login/", RedirectView.as_view(url=settings.LOGIN_URL, query_string=True), name="admin-login"),
    # The names are mozilla-django-oidc's; these views answer 404 when OpenID is not configured.
    path("oidc/authenticate/", OIDCLoginStartView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", OIDCCallbackView.as_view(), name="oidc_authentication_callback"),
]
