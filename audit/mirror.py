"""The JSONL mirror of the audit trail (``AUTOHEAL_AUDIT_JSONL``).

One line per committed event, appended after commit. The file is opened in append mode for each
batch and closed again, so logrotate may rename it (``create``) or truncate it (``copytruncate``)
at any time without losing a line or needing a signal: the next batch simply opens whatever file
is at the path then (creating it if it was moved away). ``O_APPEND`` makes every write land at the
current end of the file, so a truncation never leaves a hole of zero bytes before the next line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.conf import settings

from autoheal_site.text import json_line_safe

if TYPE_CHECKING:
    from audit.models import AuditEvent

logger = logging.getLogger(__name__)
_lock = threading.Lock()


def line_for(event: AuditEvent) -> str:
    """The mirror line of one event: its JSON plus the chain fields, so the mirror can be imported."""
    body = event.as_dict()
    body["prev_hash"] = event.prev_hash
    body["hash"] = event.hash
    return json_line_safe(json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)) + "\n"


def append(event: AuditEvent) -> None:
    """Append one committed event as a JSON line; failures are logged, never raised."""
    append_many([event])


def append_many(events: Sequence[AuditEvent]) -> None:
    """Append committed events, one line each, in one write; failures are logged, never raised."""
    path = settings.AUTOHEAL_AUDIT_JSONL
    if not path or not events:
        return
    text = "".join(line_for(event) for event in events)
    try:
        with _lock:
            directory = os.path.dirname(path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            # One O_APPEND write call for the batch: other processes appending at the same time
            # do not interleave inside a line, and each write lands at the file's current end.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                data = text.encode("utf-8")
                while data:
                    written = os.write(fd, data)
                    data = data[written:]
            finally:
                os.close(fd)
    except OSError:
        # The database row is the record; the mirror is a copy. audit_export can rebuild it.
        logger.exception("could not append %d audit events to the JSONL mirror", len(events))
