"""WSGI entry point for request/response paths served by a WSGI server (gunicorn).

``WSGIGuard`` (autoheal_site/serving.py) folds a client-chosen script prefix back into the path
and refuses the live stream, which only the ASGI server can serve.
"""

import os

from django.core.wsgi import get_wsgi_application

from autoheal_site.startup import settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoheal_site.settings")
settings_or_exit()

_django = get_wsgi_application()

from autoheal_site.serving import WSGIGuard  # noqa: E402  # needs the settings loaded above

application = WSGIGuard(_django)
