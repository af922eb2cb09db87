"""Target templates: ``{{ labels.NAME }}`` placeholders and literal text, nothing else. Pure.

A policy's target (and a command's argv items) may name alert labels and nothing more: no filters,
no tags, no annotations, no attribute access. That keeps a template a plain substitution whose
result an operator can predict, and label values are inserted verbatim, never interpreted (a label
value that itself looks like ``{{ labels.x }}`` stays that text).

Everything is checked when the policy is saved (``compile_template``); rendering can then fail
only for a label the alert does not carry (``MissingLabel``). An empty label value counts as
missing, because Alertmanager drops labels with empty values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_PLACEHOLDER = re.compile(r"\{\{\s*labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# Anything that looks like template syntax once the valid placeholders are taken out.
_OTHER_SYNTAX = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}|\{\{|\}\}|\{%|%\}|\{#|#\}", re.DOTALL)


class TemplateError(ValueError):
    """A template that uses anything but ``{{ labels.NAME }}`` placeholders."""


class MissingLabel(TemplateError):
    """Rendering needs a label the alert does not carry."""

    def __init__(self, label: str, template: str) -> None:
        self.label = label
        self.template = template
        super().__init__(f"the alert has no label {label!r}, which the template {template!r} needs")


@dataclass(frozen=True)
class LabelRef:
    """A ``{{ labels.NAME }}`` placeholder."""

    name: str


@dataclass(frozen=True)
class Template:
    """A checked template: literal strings and label references, in order."""

    source: str
    parts: tuple[str | LabelRef, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """The label names the template needs, in order of first use."""
        seen: dict[str, None] = {}
        for part in self.parts:
            if isinstance(part, LabelRef):
                seen.setdefault(part.name)
        return tuple(seen)

    def render(self, labels: Mapping[str, str]) -> str:
        """Substitute label values verbatim; raise MissingLabel for an absent or empty label."""
        out = []
        for part in self.parts:
            if isinstance(part, LabelRef):
                value = labels.get(part.name, "")
                if not value:
                    raise MissingLabel(part.name, self.source)
                out.append(value)
            else:
                out.append(part)
        return "".join(out)


def compile_template(source: str) -> Template:
    """Check a template and split it into parts; raise TemplateError naming what is not allowed."""
    if not isinstance(source, str):
        raise TemplateError(f"a template must be a string, not {type(source).__name__}")
    parts: list[str | LabelRef] = []
    position = 0
    for found in _PLACEHOLDER.finditer(source):
        literal = source[position : found.start()]
        _check_literal(literal, source)
        if literal:
            parts.append(literal)
        parts.append(LabelRef(found.group(1)))
        position = found.end()
    tail = source[position:]
    _check_literal(tail, source)
    if tail:
        parts.append(tail)
    return Template(source=source, parts=tuple(parts))


def _check_literal(literal: str, source: str) -> None:
    bad = _OTHER_SYNTAX.search(literal)
    if bad:
        raise TemplateError(
            f"{source!r}: only {{{{ labels.NAME }}}} placeholders are allowed "
            f"(no filters, tags, annotations or other variables); found {bad.group(0)!r}"
        )


def render(source: str, labels: Mapping[str, str]) -> str:
    """Check and render in one step (for callers that hold only the template text)."""
    return compile_template(source).render(labels)
