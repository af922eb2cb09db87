"""ASGI entry point: daphne serves HTTP and the SSE stream from here."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoheal_site.settings")

application = get_asgi_application()
