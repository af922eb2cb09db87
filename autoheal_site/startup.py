"""Load the settings before anything else, so a misconfiguration reads as one line, not a traceback.

``manage.py``, ``asgi.py`` and ``wsgi.py`` call ``settings_or_exit()`` first: settings.py raises
``ImproperlyConfigured`` with a message that names the variable and what it needs, and an operator
should see exactly that message and a non-zero exit status.
"""

from __future__ import annotations

import os
import sys


def settings_or_exit() -> None:
    """Load Django's settings; on ImproperlyConfigured print ``autoheal: <message>`` and exit 2."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoheal_site.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 - touching one setting imports the settings module
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"autoheal: {exc}\n")
        raise SystemExit(2) from None
