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

from autoheal_site.text import dumps_compact, json_line_safe

if TYPE_CHECKING:
    from audit.models import AuditEvent

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_REPAIR_MAX = 20000


def line_for(event: AuditEvent) -> str:
    """The mirror line of one event: its JSON plus the chain fields, so the mirror can be imported."""
    chain = f',"prev_hash":{dumps_compact(event.prev_hash)},"hash":{dumps_compact(event.hash)}}}'
    return json_line_safe(event.as_json()[:-1] + chain) + "\n"


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


def last_mirrored(path: str) -> tuple[int, str] | None:
    """The id and hash on the mirror's last complete line, or None (no file, empty, unreadable)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            window = 65536
            while True:
                start = max(0, size - window)
                handle.seek(start)
                chunk = handle.read(size - start)
                lines = chunk.rstrip(b"\n").rsplit(b"\n", 1)
                if len(lines) == 2 or start == 0:
                    last = lines[-1]
                    break
                window *= 4  # a very long last line: read further back
        if not last.strip():
            return None
        body = json.loads(last)
        if not isinstance(body.get("id"), int) or not isinstance(body.get("hash"), str):
            return None
        return body["id"], body["hash"]
    except (OSError, ValueError, AttributeError):
        return None


def append_sealed(events: Sequence[AuditEvent]) -> None:
    """Append a freshly sealed batch, first repairing the mirror if an earlier batch is missing.

    Only the sealer calls this, one batch at a time, so the file's last line is the newest event
    mirrored. Events at or below it are already there (not written twice); committed events between
    it and this batch (a sealer that died after its commit) are read from the table and written
    first, so the mirror stays equal to the table, in chain order. A new empty file (after a
    rotation) has no last line, and a last line whose hash the table does not hold at that id
    belongs to another history (a restored database): in both cases the batch is simply appended.
    """
    path = settings.AUTOHEAL_AUDIT_JSONL
    if not path or not events:
        return
    from audit.models import AuditEvent

    batch = list(events)
    last = last_mirrored(path)
    if last is not None:
        last_id, last_hash = last
        known = {event.id: event.hash for event in events}
        if last_id not in known:
            known.update(AuditEvent.objects.filter(id=last_id).values_list("id", "hash"))
        if known.get(last_id) == last_hash:
            batch = [event for event in events if event.id > last_id]
            if batch and batch[0].id > last_id + 1:
                # Bounded per batch: a far-behind file catches up over several batches.
                missing = list(
                    AuditEvent.objects.filter(id__gt=last_id, id__lt=batch[0].id).order_by("id")[:_REPAIR_MAX]
                )
                if missing:
                    logger.warning(
                        "audit mirror was missing %d events after id %s; appended them", len(missing), last_id
                    )
                batch = missing + batch
    append_many(batch)
