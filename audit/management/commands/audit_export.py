"""``manage.py audit_export``: the audit trail as JSONL, with the filters of ``GET /audit``."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.db.models import Max, Min
from tqdm import tqdm

from audit.filters import ParameterError, filterset_for
from audit.mirror import line_for
from audit.selectors import audit_stream
from audit.services import audit_export_record

FILTERS = ("kind", "alertname", "since", "until", "contains")


class Command(BaseCommand):
    help = (
        "Write audit events as JSON lines (oldest first, with their hashes) to a file or standard "
        "output. An export without kind/alertname/since/contains filters is complete up to its last "
        "event and lets audit_prune remove what it holds."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", "-o", default="-", help="file to write (default: standard output)")
        parser.add_argument("--kind", help="comma list of kinds")
        parser.add_argument("--alertname")
        parser.add_argument("--since", help="ISO 8601 or 30s/15m/2h/7d ago")
        parser.add_argument("--until", help="ISO 8601 or 30s/15m/2h/7d ago")
        parser.add_argument("--contains", help="case-insensitive text in alertname, target, message, labels")
        parser.add_argument("--progress", action="store_true", help="show a progress bar even when not on a terminal")

    def handle(self, *args: Any, **options: Any) -> None:
        query = {name: options[name] for name in FILTERS if options.get(name)}
        try:
            filterset = filterset_for(query)
        except ParameterError as exc:
            raise CommandError(f"--{exc.parameter}: {exc.message}") from None
        queryset = filterset.qs
        complete = not (set(query) - {"until"})
        output = options["output"]
        show = options["progress"] or sys.stderr.isatty()
        if output == "-":
            written, last_id = self._write(queryset, self.stdout, show)
            destination = "stdout"
        else:
            written, last_id = self._write_file(queryset, output, show)
            destination = output
        if complete and last_id is not None:
            audit_export_record(through_id=last_id, events=written, destination=destination)
        if output != "-" or show:
            self.stderr.write(f"exported {written} events" + (f" through id {last_id}" if last_id else ""))

    def _write_file(self, queryset: Any, path: str, show: bool) -> tuple[int, int | None]:
        # Write beside the target and rename at the end: an interrupted export leaves no half file
        # behind that could be mistaken for a complete one.
        directory = os.path.dirname(os.path.abspath(path))
        try:
            fd, partial = tempfile.mkstemp(prefix=".audit-export-", dir=directory)
        except OSError as exc:
            raise CommandError(f"cannot write in {directory}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                result = self._write(queryset, handle, show)
            os.chmod(partial, 0o640)
            os.replace(partial, path)
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise
        return result

    def _write(self, queryset: Any, handle: TextIO | OutputWrapper, show: bool) -> tuple[int, int | None]:
        bounds = queryset.aggregate(low=Min("id"), high=Max("id")) if show else {"low": None, "high": None}
        bar = None
        if show and bounds["high"] is not None:
            # Progress in ids, not rows: a row count would need a COUNT(*) over the whole match.
            bar = tqdm(total=bounds["high"] - bounds["low"] + 1, unit="id", unit_scale=True, file=sys.stderr)
        written = 0
        last_id: int | None = None
        done = bounds["low"] - 1 if bounds["low"] is not None else 0
        for event in audit_stream(queryset=queryset.defer("search")):
            handle.write(line_for(event))
            written += 1
            last_id = event.id
            if bar is not None and event.id - done >= 1000:
                bar.update(event.id - done)
                done = event.id
        if bar is not None:
            bar.update(max(0, bounds["high"] - done))
            bar.close()
        return written, last_id
