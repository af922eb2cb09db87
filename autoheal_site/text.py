"""Showing text that came from an alert: every invisible or line-breaking character made visible.

Label values may hold anything Alertmanager forwards: terminal escape sequences (U+001B), other
control characters, DEL, the line and paragraph separators U+2028/U+2029 and the replacement
character that stands for a U+0000 intake could not store. Shown raw they hide text, fake line
breaks in logs or recolour a terminal; ``visible`` writes each as ``\\u001b`` instead, so every page,
file and terminal shows the same escaped value. HTML escaping stays the template engine's job.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def visible(text: object) -> str:
    """``text`` with each control or separator character written as ``\\uXXXX``."""
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", "" if text is None else str(text))


# Built once: json.dumps with any option builds a new encoder on every call.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def dumps_compact(value: Any) -> str:
    """Compact JSON, UTF-8 as is, unknown types as text: the form of audit events outside their
    hash (the JSONL mirror and the live stream)."""
    return _COMPACT.encode(value)


def json_line_safe(line: str) -> str:
    """A JSON text with DEL, C1 controls and U+2028/U+2029 escaped too (JSON escapes only C0).

    The value is unchanged for any JSON parser; line-based tools no longer see extra line breaks.
    """
    return re.sub("[\x7f-\x9f\u2028\u2029]", lambda m: f"\\u{ord(m.group()):04x}", line)
