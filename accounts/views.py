"""The login page: the provider's button when OpenID login is configured, the local form otherwise."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import LoginView, redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseForbidden, JsonResponse

from accounts.authentication import REALM
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


def browser_login_redirect(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """For a page served by DRF (the API schema and docs): who is not signed in gets a useful answer.

    A browser (it asks for ``text/html``) is sent to the login page and back here afterwards, like
    /ops/ and /console. Any other caller without credentials gets a 401 JSON with the Bearer
    challenge, whatever format it asked for (DRF would render the refusal as HTML or YAML, or
    answer 406 before it looked at credentials). Requests with credentials go to the view.
    """

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.user.is_authenticated or "HTTP_AUTHORIZATION" in request.META:
            return view(request, *args, **kwargs)
        if "text/html" in request.headers.get("Accept", ""):
            return redirect_to_login(request.get_full_path())
        response = JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
        response["WWW-Authenticate"] = REALM
        return response

    return wrapped
