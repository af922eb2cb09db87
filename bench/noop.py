"""The baseline: a DRF view that does nothing, behind the same middleware as ``POST /alert``."""

from typing import Any

from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class NoopView(APIView):
    """Answers 202 without reading the body or touching the database."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        return Response({"accepted": 0, "duplicates": 0, "jobs": 0}, status=202)

    def get(self, request: Request) -> Response:
        return Response({"ok": True})
