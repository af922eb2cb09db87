"""Routes of this app (included at the site root by autoheal_site/urls.py)."""

from django.urls import path

from audit.streams import events_view
from dashboard import views

urlpatterns = [
    path("events", events_view, name="events"),
    path("console", views.console, name="console"),
]
