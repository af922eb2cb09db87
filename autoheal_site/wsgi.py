"""WSGI entry point for request/response paths served by a WSGI server."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoheal_site.settings")

application = get_wsgi_application()
