"""The JSONL mirror of the audit trail (``AUTOHEAL_AUDIT_JSONL``).

One line per committed event, appended after commit. The file is opened in append mode for each
batch and closed again, so logrotate may rename it (``create``) or truncate it (``copytruncate``)
at any time without losing a line or needing a signal.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from audit.models import AuditEvent

logger = logging.getLogger(__name__)
_lock = threading.Lock()


def append(event: AuditEvent) -> None:
    """Append one committed event as a JSON line; failures are logged, never raised."""
    path = settings.AUTOHEAL_AUDIT_JSONL
    if not path:
        return
    line = json.dumps(event.as_dict(), ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
    try:
        with _lock:
            directory = os.path.dirname(path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(line)
    except OSError:
        # The database row is the record; the mirror is a copy. audit_export can rebuild it.
        logger.exception("could not append audit event %s to the JSONL mirror", event.id)
