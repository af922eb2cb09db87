"""``POST /api/jobs/<id>/approve`` and ``POST /api/jobs/<id>/deny``: a person decides (admin role)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.roles import IsAdmin
from remediation.api import RejectUnknownMixin, _actor, _invalid
from remediation.approvals import ApprovalError, ApprovalResult, job_approve, job_deny


class DecisionInput(RejectUnknownMixin):
    reason = serializers.CharField(max_length=1000, help_text="Why; required, kept in the audit trail.")


_RESULT = inline_serializer(
    name="ApprovalResult",
    fields={
        "job": serializers.IntegerField(),
        "state": serializers.CharField(help_text="queued (it will run), or skipped"),
        "skip_reason": serializers.CharField(help_text="why it will not run (approval_denied, or a guard)"),
    },
)
_ERROR = inline_serializer(
    name="ApprovalError", fields={"error": serializers.CharField(), "field": serializers.CharField()}
)


def _answer(result: ApprovalResult) -> Response:
    return Response({"job": result.job.pk, "state": result.state, "skip_reason": result.job.skip_reason})


class _DecisionView(APIView):
    permission_classes = [IsAdmin]
    approve = True

    def post(self, request: Request, job_id: str) -> Response:
        # Any path segment reaches the view, so a malformed id gets the API's JSON 404, not a page.
        if not job_id.isascii() or not job_id.isdigit() or len(job_id) > 18:
            return Response({"error": f"no job {job_id[:40]!r}", "field": ""}, status=404)
        data = DecisionInput(data=request.data)
        if not data.is_valid():
            return _invalid(data.errors)
        decide = job_approve if self.approve else job_deny
        try:
            result = decide(job_id=int(job_id), actor=_actor(request), reason=data.validated_data["reason"])
        except ApprovalError as exc:
            return Response({"error": str(exc), "field": exc.field}, status=exc.status)
        return _answer(result)


_RESPONSES = {
    200: _RESULT,
    400: OpenApiResponse(_ERROR, description="The reason is missing or too long."),
    404: OpenApiResponse(_ERROR, description="No such job."),
    409: OpenApiResponse(_ERROR, description="The job is not awaiting approval."),
}


class JobApproveView(_DecisionView):
    """Approve a job that waits for approval; every guard is decided again before it is queued."""

    approve = True

    @extend_schema(
        operation_id="job_approve",
        summary="Approve a waiting job",
        request=DecisionInput,
        responses=_RESPONSES,
    )
    def post(self, request: Request, job_id: str) -> Response:
        return super().post(request, job_id)


class JobDenyView(_DecisionView):
    """Deny a job that waits for approval: it is skipped with reason approval_denied."""

    approve = False

    @extend_schema(operation_id="job_deny", summary="Deny a waiting job", request=DecisionInput, responses=_RESPONSES)
    def post(self, request: Request, job_id: str) -> Response:
        return super().post(request, job_id)
