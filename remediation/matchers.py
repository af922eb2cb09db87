"""Alertmanager matchers: parse and match, pure.

One matcher is ``name op value`` with ``op`` one of ``=``, ``!=``, ``=~``, ``!~``, as Alertmanager and
amtool write them: ``alertname="ContainerUnhealthy"``, ``severity=~"critical|page"``, ``env!=dev``.
The semantics follow Alertmanager's:

- a label the alert does not carry matches as the empty string, so ``foo=""`` matches an absent
  label and ``foo!=""`` requires it;
- a regex must match the whole value (Alertmanager compiles ``^(?:re)$``), never a part of it;
- a quoted value understands the escapes ``\\"``, ``\\\\`` and ``\\n``; any other backslash is kept
  as written, so ``=~"\\d+"`` is the regex ``\\d+``.

Regexes are compiled by RE2 (the ``google-re2`` package), the engine behind Go's ``regexp`` that
Alertmanager uses: matching takes time linear in the value, whatever the pattern, so a pattern like
``(a+)+`` cannot stall the process that evaluates it. RE2's syntax is Alertmanager's: look-around
and back-references are refused instead of silently meaning something Alertmanager never would,
``\\d`` and ``\\w`` are ASCII, and ``.`` does not match a newline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

EQUAL = "="
NOT_EQUAL = "!="
REGEX = "=~"
NOT_REGEX = "!~"
OPERATORS = (EQUAL, NOT_EQUAL, REGEX, NOT_REGEX)

# name and operator; "=~" and "!~" are tried before "=" so "a=~b" is a regex matcher. The rest of
# the text, stripped, is the raw value (no regex over it: long values cost linear time).
_MATCHER = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|!~|!=|=)")
_LEADING_NAME = re.compile(r"^\s*([^\s=!~]*)")
# Group openings Python accepts but RE2 (Alertmanager) does not: look-around, named
# back-references and conditionals.
_NOT_RE2_GROUPS = ("(?=", "(?!", "(?<=", "(?<!", "(?P=", "(?(")


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported to whoever wrote it, not to stderr


class MatcherError(ValueError):
    """A matcher that cannot be parsed; the message says which one and what is wrong."""


@dataclass(frozen=True)
class Matcher:
    """One parsed matcher; ``matches(labels)`` applies Alertmanager's semantics."""

    name: str
    op: str
    value: str
    _regex: Any = field(default=None, compare=False, repr=False)  # a compiled RE2 pattern

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the alert's labels satisfy this matcher (a missing label is the empty string)."""
        actual = labels.get(self.name, "")
        if self.op == EQUAL:
            return actual == self.value
        if self.op == NOT_EQUAL:
            return actual != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(actual) is not None
        return found if self.op == REGEX else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{quote(self.value)}"


def quote(value: str) -> str:
    """The value as a double-quoted matcher value that ``parse_matcher`` reads back unchanged."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _re2_problem(pattern: str) -> str | None:
    """What in ``pattern`` RE2 would refuse, if anything (escapes and character classes respected)."""
    i = 0
    in_class = False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if not in_class and pattern[i + 1 : i + 2] in tuple("123456789"):
                return "back-references"
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            # A "]" right after "[" or "[^" is a literal member, not the end of the class.
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            if pattern[i : i + 1] == "]":
                i += 1
            in_class = True
            continue
        elif char == "(" and pattern.startswith(_NOT_RE2_GROUPS, i):
            return "look-around, back-references and conditionals"
        i += 1
    return None


def _unescape(raw: str, text: str) -> str:
    """Read a matcher value as Alertmanager does: optional quotes, three escapes, no stray quote."""
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    out: list[str] = []
    closed = False
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            # Only \" \\ and \n are escapes; any other backslash stays, as in regexes like \d.
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        if char == '"':
            if not quoted or i != len(body) - 1:
                raise MatcherError(f'{text!r}: the value contains an unescaped double quote; write it as \\"')
            closed = True
        else:
            out.append(char)
        i += 1
    if quoted and not closed:
        raise MatcherError(f"{text!r}: the value's opening double quote is never closed")
    return "".join(out)


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher like ``severity=~"critical|page"``; raise MatcherError if it is not one."""
    if not isinstance(text, str):
        raise MatcherError(f'a matcher must be a string like alertname="X", not {type(text).__name__}')
    if text.strip().startswith("{"):
        raise MatcherError(f'{text!r}: give one matcher per entry, without braces, e.g. alertname="X"')
    found = _MATCHER.match(text)
    if not found:
        leading = _LEADING_NAME.match(text)
        word = leading.group(1) if leading else ""
        if word and not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", word):
            raise MatcherError(
                f"{text!r}: {word!r} is not a label name (letters, digits, _ and :, not starting with a digit)"
            )
        raise MatcherError(
            f'{text!r}: not a matcher; write name=value, name!=value, name=~regex or name!~regex, e.g. alertname="X"'
        )
    name, op = found.groups()
    value = _unescape(text[found.end() :].strip(), text)
    regex = None
    if op in (REGEX, NOT_REGEX):
        problem = _re2_problem(value)
        if problem:
            raise MatcherError(f"{text!r}: {problem} are not supported by Alertmanager's regex syntax (RE2)")
        try:
            # fullmatch anchors both ends, as Alertmanager's ^(?:re)$ does.
            regex = re2.compile(value, options=_RE2_OPTIONS)
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise MatcherError(f"{text!r}: invalid regular expression: {reason}") from None
    return Matcher(name=name, op=op, value=value, _regex=regex)


def parse_matchers(texts: Iterable[object]) -> list[Matcher]:
    """Parse a policy's matcher list; the error names the entry (``matchers[1]: ...``)."""
    parsed = []
    for index, text in enumerate(texts):
        try:
            parsed.append(parse_matcher(text))  # type: ignore[arg-type]
        except MatcherError as exc:
            raise MatcherError(f"matchers[{index}]: {exc}") from None
    return parsed


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher matches; an empty list matches everything (as in Alertmanager)."""
    return all(m.matches(labels) for m in matchers)
