"""``GET,POST /api/switch`` (the runtime kill switch) and ``POST /ack`` (an operator takes over)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.roles import IsOps, OpsReadAdminWrite
from remediation import safety
from remediation.selectors import switch_effective


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only: "no", 0 or "false" as a string are refused, not guessed."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only (not a string, not a boolean, not 1.5)."""

    default_error_messages = {"invalid": "Must be a JSON integer."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class RejectUnknownMixin(serializers.Serializer):
    """Refuse fields the endpoint does not know, naming them (a typo must not be ignored)."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({unknown[0]: "Unknown field."})
        return attrs


class SwitchInput(RejectUnknownMixin):
    """A change of the runtime switch; give at least one field."""

    enabled = StrictBooleanField(required=False, help_text="false switches remediation off; true switches it on.")
    dry_run = StrictBooleanField(
        required=False, help_text="Runtime dry-run; it can never go below the AUTOHEAL_DRY_RUN floor."
    )
    pause_minutes = StrictIntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=safety.MAX_PAUSE_MINUTES,
        help_text="Pause everything for this many minutes (resumes by itself); null ends a pause.",
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)
    close_circuit = StrictBooleanField(required=False, help_text="true closes an open circuit breaker.")


class SwitchOutput(serializers.Serializer):
    enabled = serializers.BooleanField(help_text="Effective: environment floor, runtime switch and pause combined.")
    dry_run = serializers.BooleanField(help_text="Effective: environment floor, or the runtime switch.")
    pause_minutes = serializers.IntegerField(allow_null=True, help_text="Minutes left in the pause, or null.")
    paused_until = serializers.DateTimeField(allow_null=True)
    circuit = serializers.ChoiceField(choices=["open", "closed"])
    runtime = serializers.DictField(help_text="What the runtime switch itself holds.")
    floors = serializers.DictField(help_text="The environment floors (AUTOHEAL_ENABLED, AUTOHEAL_DRY_RUN).")
    notes = serializers.ListField(child=serializers.CharField(), required=False)


class AckInput(RejectUnknownMixin):
    fingerprint = serializers.CharField(max_length=64, help_text="The alert's fingerprint, as Alertmanager sends it.")
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


_ERROR = inline_serializer(
    name="SwitchError", fields={"error": serializers.CharField(), "field": serializers.CharField()}
)


def _invalid(errors: Any) -> Response:
    """The first validation error as ``{"error": "field: message", "field": field}``."""
    field, messages = next(iter(errors.items()))
    message = messages[0] if isinstance(messages, list) else messages
    if isinstance(message, dict):  # a nested error from validate()
        field, message = next(iter(message.items()))
        message = message[0] if isinstance(message, list) else message
    if field == "non_field_errors":
        return Response({"error": str(message), "field": ""}, status=status.HTTP_400_BAD_REQUEST)
    return Response({"error": f"{field}: {message}", "field": field}, status=status.HTTP_400_BAD_REQUEST)


def _actor(request: Request) -> str:
    user = request.user
    return str(getattr(user, "get_username", lambda: "")() or user)


class SwitchView(APIView):
    """The runtime kill switch: ops may read it, admin may change it; every change is audited."""

    permission_classes = [OpsReadAdminWrite]

    @extend_schema(operation_id="switch_read", summary="The runtime kill switch", responses={200: SwitchOutput})
    def get(self, request: Request) -> Response:
        return Response(safety.switch_as_dict(switch_effective()))

    @extend_schema(
        operation_id="switch_change",
        summary="Change the kill switch, pause, dry-run or close the circuit",
        description=(
            '`{"enabled": false, "pause_minutes": 30}` pauses everything for 30 minutes; `{"enabled": false}` '
            'switches off until switched on; `{"enabled": true}` switches on and ends a pause. A request to '
            "loosen beyond an environment floor is stored in the runtime layer only: the effective value "
            "stays at the floor and `notes` says so. Audited as `switch_changed` with the actor."
        ),
        request=SwitchInput,
        responses={200: SwitchOutput, 400: OpenApiResponse(_ERROR, description="A field is invalid (named).")},
    )
    def post(self, request: Request) -> Response:
        data = SwitchInput(data=request.data)
        if not data.is_valid():
            return _invalid(data.errors)
        values = data.validated_data
        try:
            result = safety.switch_set(
                enabled=values.get("enabled"),
                dry_run=values.get("dry_run"),
                pause_minutes=values.get("pause_minutes", safety.UNCHANGED),
                actor=_actor(request),
                reason=values.get("reason", ""),
                close_circuit=values.get("close_circuit", False),
            )
        except safety.SafetyError as exc:
            return Response({"error": str(exc), "field": exc.field}, status=status.HTTP_400_BAD_REQUEST)
        return Response({**safety.switch_as_dict(result.effective), "notes": result.notes})


class AckView(APIView):
    """An operator takes an incident over: no further action for its fingerprint until it resolves."""

    permission_classes = [IsOps]

    @extend_schema(
        operation_id="incident_ack",
        summary="Take an incident over",
        request=AckInput,
        responses={
            200: inline_serializer(
                name="AckResult",
                fields={
                    "fingerprint": serializers.CharField(),
                    "alertname": serializers.CharField(),
                    "acked_by": serializers.CharField(),
                    "acked_at": serializers.DateTimeField(),
                    "note": serializers.CharField(),
                },
            ),
            400: OpenApiResponse(_ERROR, description="A field is invalid (named)."),
            404: OpenApiResponse(description="No firing incident has this fingerprint."),
        },
    )
    def post(self, request: Request) -> Response:
        data = AckInput(data=request.data)
        if not data.is_valid():
            return _invalid(data.errors)
        try:
            alert = safety.incident_ack(
                fingerprint=data.validated_data["fingerprint"], note=data.validated_data["note"], actor=_actor(request)
            )
        except safety.IncidentNotFound as exc:
            return Response({"error": str(exc), "field": "fingerprint"}, status=status.HTTP_404_NOT_FOUND)
        except safety.SafetyError as exc:
            return Response({"error": str(exc), "field": "fingerprint"}, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            {
                "fingerprint": alert.fingerprint,
                "alertname": alert.alertname,
                "acked_by": alert.acked_by,
                "acked_at": alert.acked_at.isoformat() if alert.acked_at else None,
                "note": alert.ack_note,
            }
        )
