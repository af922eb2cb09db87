"""Routes of the fleet (included at the site root)."""

from django.urls import path

from fleet import api

urlpatterns = [
    path("api/agents", api.AgentsView.as_view(), name="agents"),
    path("api/agent/hello", api.hello, name="agent-hello"),
    path("api/agent/inventory", api.inventory, name="agent-inventory"),
    path("api/agent/events", api.health_event, name="agent-events"),
    path("api/agent/jobs/next", api.job_next, name="agent-job-next"),
    path("api/agent/jobs/<int:job_id>/start", api.job_start, name="agent-job-start"),
    path("api/agent/jobs/<int:job_id>/refuse", api.job_refuse, name="agent-job-refuse"),
    path("api/agent/jobs/<int:job_id>/heartbeat", api.job_heartbeat, name="agent-job-heartbeat"),
    path("api/agent/jobs/<int:job_id>/evidence", api.job_evidence, name="agent-job-evidence"),
    path("api/agent/jobs/<int:job_id>/report", api.job_report, name="agent-job-report"),
]
