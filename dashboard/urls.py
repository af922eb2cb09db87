"""Routes of this app (included at the site root by autoheal_site/urls.py)."""

from django.urls import path

from audit.streams.views import events_view
from dashboard import ops, people, views

urlpatterns = [
    # Pages name their icon; this answers the browsers (and the admin's pages) that ask the root.
    path("favicon.ico", views.favicon, name="favicon"),
    path("events", events_view, name="events"),
    path("console", views.console, name="console"),
    path("ops/", ops.ops, name="ops"),
    path("ops/switch", ops.switch_change, name="ops-switch"),
    path("ops/ack", ops.ack, name="ops-ack"),
    path("ops/actions/<int:job_id>/false-positive", ops.false_positive, name="ops-false-positive"),
    path("ops/jobs/<int:job_id>/decide", people.job_decide, name="ops-job-decide"),
    path("ops/notify-test", people.notify_test, name="ops-notify-test"),
]
