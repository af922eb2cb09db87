"""WSGI entry point for request/response paths served by a WSGI server."""

import os

from django.core.wsgi import get_wsgi_application

from autoheal_site.startup import settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoheal_site.settings")
settings_or_exit()

application = get_wsgi_application()
