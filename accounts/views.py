"""The login page: the provider's button when OpenID login is configured, the local form otherwise."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden

from accounts.oidc import oidc_enabled


class AutohealLoginView(LoginView):
    """Django's LoginView; the local password form is refused when local login is switched off."""

    template_name = "registration/login.html"
    # A signed-in user sent here lacks the role for the page they wanted; redirecting them back
    # would loop, so the page says so and offers another sign-in instead.
    redirect_authenticated_user = False

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.AUTOHEAL_LOCAL_LOGIN:
            return HttpResponseForbidden("Local login is switched off: sign in with single sign-on.")
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["oidc_enabled"] = oidc_enabled()
        context["local_login"] = settings.AUTOHEAL_LOCAL_LOGIN
        context["sso_refused"] = self.request.GET.get("sso") == "refused"
        return context
