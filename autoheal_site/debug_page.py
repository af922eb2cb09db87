"""What Django's debug page may show: no credential, whatever the setting is called.

Django hides settings whose names look secret (``KEY``, ``TOKEN``, ``PASS`` ...), but not a
``DATABASE_URL`` or ``REDIS_URL`` whose URL carries a password, and the page also lists the
request's environment. Here any value holding a URL with a password is hidden too, as are names
that say DSN or CREDENTIAL. DEBUG is off unless ``AUTOHEAL_DEBUG=true``; this is for when it is on.
"""

from __future__ import annotations

import re
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@ (the user may be empty, as in redis://:password@host)
URL_WITH_PASSWORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s@:]*:[^/\s@]+@")


class CredentialMaskingFilter(SafeExceptionReporterFilter):
    """Django's filter, plus: any URL with a password, and DSN/CREDENTIAL names, are masked."""

    hidden_settings = re.compile("API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|DSN|CREDENTIAL", flags=re.I)

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str) and URL_WITH_PASSWORD.search(cleansed):
            return self.cleansed_substitute
        return cleansed
