"""What goes over the wire: the SSE frames of the live stream and the request's filters.

An audit event is encoded once, as a :class:`StreamItem`, and the same bytes go to every client.
The query parameters (``kind``, ``alertname``) and the resume position (``Last-Event-ID``) are
parsed here; a bad one raises :class:`StreamRequestError` naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from audit.models import ALL_KINDS
from autoheal_site.text import json_line_safe

CHANNEL = "audit"
EVENT_TYPE = "audit"
# The library's first frame: 2 KiB of padding so old proxies and browsers start delivering.
OPEN_FRAME = (":" + " " * 2048 + "\n\nevent: stream-open\ndata:\n\n").encode()
KEEPALIVE_FRAME = b"event: keep-alive\ndata:\n\n"
ALERTNAME_MAX = 200


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One committed audit event, encoded once as an SSE frame and shared by every client."""

    id: int
    kind: str
    alertname: str
    frame: bytes


def stream_item(event: dict[str, Any]) -> StreamItem:
    """Encode an event (``AuditEvent.as_dict()``) as the contract's SSE frame."""
    # json.dumps escapes CR and LF inside strings, so the data always fits on one line; DEL, C1
    # controls and U+2028/U+2029 are escaped as well, as in /audit and the JSONL mirror.
    data = json_line_safe(json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str))
    frame = f"id: {int(event['id'])}\nevent: {EVENT_TYPE}\ndata: {data}\n\n".encode()
    return StreamItem(int(event["id"]), str(event.get("kind", "")), str(event.get("alertname", "")), frame)


class StreamRequestError(ValueError):
    """A bad query parameter or header; the message names it."""


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Server-side filters: ``kind`` (any of these; empty means all) and an exact ``alertname``."""

    kinds: frozenset[str] = frozenset()
    alertname: str = ""

    @classmethod
    def parse(cls, *, kind: str | None, alertname: str | None) -> StreamFilter:
        """Parse the query parameters; raise :class:`StreamRequestError` naming a bad one."""
        kinds = frozenset(k.strip() for k in (kind or "").split(",") if k.strip())
        unknown = sorted(kinds - set(ALL_KINDS))
        if unknown:
            raise StreamRequestError(f"kind: unknown audit kind {unknown[0]!r}")
        name = (alertname or "").strip()
        if len(name) > ALERTNAME_MAX:
            raise StreamRequestError(f"alertname: longer than {ALERTNAME_MAX} characters")
        return cls(kinds, name)

    def matches(self, kind: str, alertname: str) -> bool:
        if self.kinds and kind not in self.kinds:
            return False
        return not self.alertname or alertname == self.alertname

    def as_query(self) -> dict[str, str]:
        query = {}
        if self.kinds:
            query["kind"] = ",".join(sorted(self.kinds))
        if self.alertname:
            query["alertname"] = self.alertname
        return query


def parse_last_event_id(header: str | None, param: str | None) -> int | None:
    """The position to resume after: the ``Last-Event-ID`` header, else ``lastEventId``.

    Browsers send the header when they reconnect by themselves; the query parameter is how a page
    that rendered events first says where its stream should start.
    """
    raw = (header or "").strip() or (param or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise StreamRequestError("Last-Event-ID: must be an audit event id (a non-negative integer)")
    return int(raw)
