"""Reads of the audit trail: API pages, export streams, the chain walk of ``audit_verify``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Max, Min, QuerySet

from audit.filters import AuditEventFilter, PageParams
from audit.models import AuditAnchor, AuditEvent, AuditExport, iso_utc
from audit.services import GENESIS_HASH, HASHED_FIELDS, body_hash

# How many ids one page of a ``contains`` search looks at, newest first. A substring that is rare
# but made of common trigrams would otherwise make PostgreSQL recheck most of the table in one
# query (seconds); bounded, each answer reads at most this many rows and its cursor says where
# to continue. Measured in bench/audit_api.py.
SEARCH_WINDOW = 100_000

# Columns a page needs (the search text and the hashes stay in the database).
PAGE_FIELDS = ("id", *HASHED_FIELDS)


@dataclass(frozen=True)
class Page:
    """One answer of /audit: events newest first and where the next page starts (or None)."""

    events: list[AuditEvent]
    next_before: int | None


def audit_page(*, filterset: AuditEventFilter, page: PageParams) -> Page:
    """The newest ``page.n`` matching events below the cursor, in one query (plus fixed bounds)."""
    queryset = filterset.qs
    if filterset.empty:
        return Page([], None)
    top = page.before_id
    if filterset.highest_id is not None:
        top = min(top, filterset.highest_id + 1) if top is not None else filterset.highest_id + 1
    floor = filterset.lowest_id
    window_floor: int | None = None
    if filterset.searching:
        bounds = AuditEvent.objects.aggregate(low=Min("id"), high=Max("id"))
        if bounds["high"] is None:
            return Page([], None)
        start = min(top, bounds["high"] + 1) if top is not None else bounds["high"] + 1
        window_floor = start - SEARCH_WINDOW
        lowest = max(floor or 0, bounds["low"])
        if window_floor <= lowest:
            window_floor = None
        else:
            queryset = queryset.filter(id__gte=window_floor)
    if top is not None:
        queryset = queryset.filter(id__lt=top)
    rows = list(queryset.only(*PAGE_FIELDS).order_by("-id")[: page.n + 1])
    if len(rows) > page.n:
        return Page(rows[: page.n], rows[page.n - 1].id)
    return Page(rows, window_floor)


def audit_stream(*, queryset: QuerySet[AuditEvent], chunk_size: int = 2000) -> Iterator[AuditEvent]:
    """Every event of ``queryset`` in id order, read in keyset chunks (bounded memory)."""
    after = 0
    while True:
        chunk = list(queryset.filter(id__gt=after).order_by("id")[:chunk_size])
        if not chunk:
            return
        yield from chunk
        after = chunk[-1].id


# --- Chain verification ----------------------------------------------------------------------


@dataclass
class ChainReport:
    """What ``audit_verify`` found: events checked and each problem with the ids concerned."""

    checked: int = 0
    first_id: int | None = None
    last_id: int | None = None
    head_hash: str = ""
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


_VERIFY_FIELDS = ("id", *HASHED_FIELDS, "prev_hash", "hash")
_MAX_REPORTED_LINKS = 10_000


def chain_verify(*, chunk_size: int = 5000) -> ChainReport:
    """Walk the chain in id order: recompute each hash and check each link to its predecessor.

    Reports ``altered`` (content no longer matches its hash), ``reordered`` (an event links to an
    event that exists elsewhere in the chain), ``missing`` (an event links to one that is not
    there: deleted, or replaced together with its hash) and ``truncated`` (events an export or
    prune already covered are gone from the end or the start).
    """
    report = ChainReport()
    anchors = dict(AuditAnchor.objects.values_list("through_hash", "through_id"))
    broken: list[tuple[int, int | None, str]] = []
    prev_id: int | None = None
    prev_hash = ""
    after = 0
    while True:
        rows = list(AuditEvent.objects.filter(id__gt=after).order_by("id").values_list(*_VERIFY_FIELDS)[:chunk_size])
        if not rows:
            break
        for row in rows:
            event_id, *values, stored_prev, stored_hash = row
            body = dict(zip(HASHED_FIELDS, values, strict=True))
            body["ts"] = iso_utc(body["ts"])
            if body_hash(stored_prev, body) != stored_hash:
                report.problems.append(
                    {"problem": "altered", "id": event_id, "detail": "its content does not match its hash"}
                )
            if prev_id is None:
                if stored_prev != GENESIS_HASH and not (stored_prev in anchors and anchors[stored_prev] < event_id):
                    broken.append((event_id, None, stored_prev))
            elif stored_prev != prev_hash:
                broken.append((event_id, prev_id, stored_prev))
            prev_id, prev_hash = event_id, stored_hash
            report.checked += 1
            if report.first_id is None:
                report.first_id = event_id
        after = rows[-1][0]
    report.last_id = prev_id
    report.head_hash = prev_hash
    _classify_breaks(report, broken[:_MAX_REPORTED_LINKS])
    exported = AuditExport.objects.aggregate(top=Max("through_id"))["top"]
    if exported is not None and (report.last_id or 0) < exported:
        report.problems.append(
            {
                "problem": "truncated",
                "id": exported,
                "detail": f"an export covered events up to id {exported}, but the trail ends at id {report.last_id}",
            }
        )
    return report


def _classify_breaks(report: ChainReport, broken: list[tuple[int, int | None, str]]) -> None:
    if not broken:
        return
    wanted = {link for _, _, link in broken}
    found: dict[str, int] = {}
    hashes = list(wanted)
    for start in range(0, len(hashes), 500):
        found.update(AuditEvent.objects.filter(hash__in=hashes[start : start + 500]).values_list("hash", "id"))
    for event_id, prev_id, link in broken:
        if link in found:
            report.problems.append(
                {
                    "problem": "reordered",
                    "id": event_id,
                    "detail": f"it follows event {found[link]}, but stands after event {prev_id}",
                }
            )
        elif prev_id is None:
            report.problems.append(
                {
                    "problem": "missing",
                    "id": event_id,
                    "detail": "events before it are missing: the chain starts neither at genesis nor at a prune anchor",
                }
            )
        else:
            report.problems.append(
                {
                    "problem": "missing",
                    "id": event_id,
                    "detail": f"the event it follows is not there: deleted or replaced between id {prev_id} and id {event_id}",
                }
            )
