"""Keep credentials out of logs: a logging filter that masks tokens in every record.

Tokens reach log lines in ways no call site controls: a library's exception text quoting a URL
or a response body, a traceback's repr of headers. The filter formats the record (message,
arguments and traceback) once, masks anything shaped like a credential, and leaves the masked
text as the record's message.
"""

from __future__ import annotations

import logging
import re

MASK = "[redacted]"
_RULES: list[tuple[re.Pattern[str], str]] = [
    # Authorization header values: Bearer/Basic/Token followed by the credential.
    (re.compile(r"(?i)\b(bearer|basic|token)(\s+|=)[A-Za-z0-9._~+/=:-]{8,}"), rf"\1\2{MASK}"),
    # Autoheal API keys wherever they appear.
    (re.compile(r"ahk_[A-Za-z0-9_-]{8,}"), MASK),
    # JWTs (header.payload.signature, base64url; the header always starts with eyJ).
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    # key=value pairs whose name says secret (query strings, form bodies, repr of dicts).
    (
        re.compile(
            r"(?i)((?:access_token|id_token|refresh_token|client_secret|password|secret|api_key|apikey|token)"
            r"[\"']?\s*[=:]\s*[\"']?)[^\s&\"',}]+"
        ),
        rf"\1{MASK}",
    ),
]


def redact(text: str) -> str:
    """``text`` with every credential-shaped substring replaced by ``[redacted]``."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """Attach to handlers: every record leaves with its credentials masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = str(record.msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        # The traceback now lives, masked, in exc_text; the formatter reuses it as is.
        record.exc_info = None
        record.msg = redact(message)
        record.args = None
        return True
