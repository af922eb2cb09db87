"""Routes of the remediation app (included at the site root)."""

from django.urls import path

from remediation import api, approvals_api, views, webhook

urlpatterns = [
    path("", views.health, name="health"),
    path("readyz", views.readyz, name="readyz"),
    path("alert", webhook.alert_webhook, name="alert-webhook"),
    path("api/switch", api.SwitchView.as_view(), name="switch"),
    path("ack", api.AckView.as_view(), name="ack"),
    path("api/jobs/<str:job_id>/approve", approvals_api.JobApproveView.as_view(), name="job-approve"),
    path("api/jobs/<str:job_id>/deny", approvals_api.JobDenyView.as_view(), name="job-deny"),
]
