"""Reads of the audit trail: API pages, export streams, the chain walk of ``audit_verify``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import OperationalError, connection, transaction
from django.db.models import Max, Min, QuerySet
from django.db.models.expressions import RawSQL

from audit.filters import AuditEventFilter, PageParams
from audit.models import AuditAnchor, AuditEvent, AuditExport, iso_utc
from audit.services import GENESIS_HASH, HASHED_FIELDS, body_hash

# ``contains`` first asks PostgreSQL for the page the usual way (the trigram index finds rare
# strings in about a millisecond, and common ones match densely in the newest rows). A substring
# that is rare but made of common trigrams would make that query recheck most of the table
# (seconds), so it gets this budget; past it, the answer is a position scan of a bounded window of
# ids below the cursor, and its ``next`` cursor says where to continue. Measured in
# bench/audit_api.py.
SEARCH_INDEX_BUDGET_MS = 10
SEARCH_WINDOW = 30_000

# Columns a page needs (the search text and the hashes stay in the database).
PAGE_FIELDS = ("id", *HASHED_FIELDS)

T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    """One answer of /audit: each event's JSON (``AuditEvent.as_dict``) newest first, and where
    the next page starts (or None)."""

    events: list[str]
    next_before: int | None


def within_budget(work: Callable[[], T], *, milliseconds: int) -> T | None:
    """Run ``work`` under a PostgreSQL statement timeout; None if it ran out of time.

    The timeout is set for a savepoint: a cancelled statement rolls it back (and the setting with
    it); after a success the previous timeout is put back, as a released savepoint would keep it.
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('statement_timeout'), set_config('statement_timeout', %s, true)",
                [f"{milliseconds}ms"],
            )
            previous = cursor.fetchone()[0]
            result = work()
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])
            return result
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == _QUERY_CANCELED:
            return None
        raise


_QUERY_CANCELED = "57014"


def _event_json_sql() -> str:
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    ts = f"{table}.ts AT TIME ZONE 'UTC'"
    # The same text as json.dumps(AuditEvent.as_dict()): keys in that order, ts in UTC with a Z
    # and microseconds only when there are any (as datetime.isoformat writes it).
    iso = (
        f"to_char({ts}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN mod(extract(microseconds FROM {ts})::bigint, "
        f"1000000) = 0 THEN '' ELSE to_char({ts}, '.US') END || 'Z'"
    )
    pairs = ", ".join(
        f"'{name}', {iso}" if name == "ts" else f"'{name}', {table}.{connection.ops.quote_name(name)}"
        for name in PAGE_FIELDS
    )
    return f"json_build_object({pairs})::text"


def _fetch(queryset: QuerySet[AuditEvent], n: int) -> list[tuple[int, str]]:
    """Up to n + 1 events as (id, JSON text), newest first."""
    ordered = queryset.order_by("-id")
    if connection.vendor == "postgresql":
        # PostgreSQL writes each event's JSON: at n=5000, decoding rows into Python objects and
        # encoding them again costs several times the query itself.
        document = RawSQL(_event_json_sql(), ())  # noqa: S611  # nosec B611: built from column names only, no input
        return list(ordered.annotate(doc=document).values_list("id", "doc")[: n + 1])
    events = []
    for row in ordered.values_list(*PAGE_FIELDS)[: n + 1]:
        event = dict(zip(PAGE_FIELDS, row, strict=True))
        event["ts"] = iso_utc(event["ts"])
        events.append((event["id"], json.dumps(event, ensure_ascii=False, separators=(",", ":"))))
    return events


def _cut(rows: list[tuple[int, str]], n: int, continue_below: int | None) -> Page:
    if len(rows) > n:
        return Page([doc for _, doc in rows[:n]], rows[n - 1][0])
    return Page([doc for _, doc in rows], continue_below)


def audit_page(*, filterset: AuditEventFilter, page: PageParams) -> Page:
    """The newest ``page.n`` matching events below the cursor: one query, plus a few fixed ones."""
    queryset = filterset.qs
    if filterset.empty:
        return Page([], None)
    top = page.before_id
    if filterset.highest_id is not None:
        top = min(top, filterset.highest_id + 1) if top is not None else filterset.highest_id + 1
    if top is not None:
        queryset = queryset.filter(id__lt=top)
    if not filterset.searching or connection.vendor != "postgresql":
        return _cut(_fetch(queryset, page.n), page.n, None)
    if SEARCH_INDEX_BUDGET_MS > 0:
        rows = within_budget(lambda: _fetch(queryset, page.n), milliseconds=SEARCH_INDEX_BUDGET_MS)
        if rows is not None:
            return _cut(rows, page.n, None)
    return _search_window(filterset, page.n, top)


def _search_window(filterset: AuditEventFilter, n: int, top: int | None) -> Page:
    """``contains`` by position over at most SEARCH_WINDOW ids below ``top``."""
    bounds = AuditEvent.objects.aggregate(low=Min("id"), high=Max("id"))
    if bounds["high"] is None:
        return Page([], None)
    start = min(top, bounds["high"] + 1) if top is not None else bounds["high"] + 1
    floor = start - SEARCH_WINDOW
    lowest = max(filterset.lowest_id or 0, bounds["low"])
    # The time bounds are already id bounds: reuse them rather than look them up again.
    data = {name: value for name, value in filterset.data.items() if name not in ("since", "until")}
    queryset = AuditEventFilter(data, queryset=AuditEvent.objects.all(), scan=True).qs.filter(id__lt=start)
    if filterset.lowest_id is not None:
        queryset = queryset.filter(id__gte=filterset.lowest_id)
    if floor > lowest:
        queryset = queryset.filter(id__gte=floor)
        return _cut(_fetch(queryset, n), n, floor)
    return _cut(_fetch(queryset, n), n, None)


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
    # Problems found beyond the first MAX_REPORTED (counted, not listed: a wholesale rewrite must
    # not exhaust memory).
    unlisted: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str, event_id: int, detail: str) -> None:
        if len(self.problems) < MAX_REPORTED:
            self.problems.append({"problem": problem, "id": event_id, "detail": detail})
        else:
            self.unlisted += 1


_VERIFY_FIELDS = ("id", *HASHED_FIELDS, "prev_hash", "hash")
MAX_REPORTED = 1000


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
                report.add("altered", event_id, "its content does not match its hash")
            if prev_id is None:
                if stored_prev != GENESIS_HASH and not (stored_prev in anchors and anchors[stored_prev] < event_id):
                    broken.append((event_id, None, stored_prev))
            elif stored_prev != prev_hash:
                if len(broken) < MAX_REPORTED:
                    broken.append((event_id, prev_id, stored_prev))
                else:
                    report.unlisted += 1
            prev_id, prev_hash = event_id, stored_hash
            report.checked += 1
            if report.first_id is None:
                report.first_id = event_id
        after = rows[-1][0]
    report.last_id = prev_id
    report.head_hash = prev_hash
    _classify_breaks(report, broken)
    exported = AuditExport.objects.aggregate(top=Max("through_id"))["top"]
    if exported is not None and (report.last_id or 0) < exported:
        report.add(
            "truncated",
            exported,
            f"an export covered events up to id {exported}, but the trail ends at id {report.last_id}",
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
            report.add("reordered", event_id, f"it follows event {found[link]}, but stands after event {prev_id}")
        elif prev_id is None:
            report.add(
                "missing",
                event_id,
                "events before it are missing: the chain starts neither at genesis nor at a prune anchor",
            )
        else:
            report.add(
                "missing",
                event_id,
                f"the event it follows is not there: deleted or replaced between id {prev_id} and id {event_id}",
            )
