"""Target templates: label placeholders only; values inserted verbatim (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediation.routing import PolicyRule, route_alert
from remediation.targets import MissingLabel, TemplateError, compile_template, render

label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True)
# Any text at all, including template syntax and shell metacharacters.
nasty_values = st.text(min_size=1, max_size=30) | st.sampled_from(
    ["{{ labels.x }}", "{% if %}", "; rm -rf /", "$(id)", "--privileged", "a}}b", "\u003cscript\u003e"]
)
literals = st.text(max_size=10).filter(lambda s: not any(t in s for t in ("{", "}", "%", "#")))


@pytest.mark.parametrize(
    ("template", "labels", "expected"),
    [
        ("{{ labels.container }}", {"container": "api"}, "api"),
        ("{{labels.container}}", {"container": "api"}, "api"),
        ("{{   labels.container\t}}", {"container": "api"}, "api"),
        ("shop-{{ labels.service }}-{{ labels.env }}", {"service": "cart", "env": "prod"}, "shop-cart-prod"),
        ("fixed-name", {}, "fixed-name"),
        ("", {}, ""),
    ],
)
def test_label_placeholders_render(template: str, labels: dict[str, str], expected: str) -> None:
    assert render(template, labels) == expected


@pytest.mark.parametrize(
    "template",
    [
        "{% if labels.x %}a{% endif %}",
        "{{ labels.container|upper }}",
        "{{ annotations.summary }}",
        "{{ labels.a.b }}",
        "{{ container }}",
        "{{ labels['container'] }}",
        "{# comment #}",
        "{{ labels.container }",
        "name}}",
    ],
)
def test_anything_but_label_placeholders_is_refused_when_checked(template: str) -> None:
    with pytest.raises(TemplateError, match=r"only \{\{ labels\.NAME \}\} placeholders are allowed"):
        compile_template(template)


def test_missing_or_empty_label_is_an_error_naming_it() -> None:
    template = compile_template("{{ labels.container }}")
    with pytest.raises(MissingLabel, match="no label 'container'"):
        template.render({"pod": "x"})
    with pytest.raises(MissingLabel):
        template.render({"container": ""})


@given(name=label_names, value=nasty_values, before=literals, after=literals)
def test_label_values_are_inserted_verbatim(name: str, value: str, before: str, after: str) -> None:
    template = compile_template(f"{before}{{{{ labels.{name} }}}}{after}")
    assert template.render({name: value}) == before + value + after


@given(value=nasty_values)
def test_a_value_that_looks_like_a_template_is_not_expanded(value: str) -> None:
    rendered = render("{{ labels.a }}/{{ labels.b }}", {"a": value, "b": "{{ labels.a }}"})
    assert rendered == f"{value}/{{{{ labels.a }}}}"


def _rule(
    name: str, priority: int, matchers: list[str], target: str = "{{ labels.container }}", **kw: object
) -> PolicyRule:
    return PolicyRule.build(
        name=name, matchers=matchers, action="restart_container", target=target, priority=priority, **kw
    )  # type: ignore[arg-type]


def test_routing_orders_by_priority_then_name_and_skips_disabled() -> None:
    rules = [
        _rule("zeta", 10, ['alertname="A"']),
        _rule("alpha", 10, ['alertname="A"']),
        _rule("first", 1, ['alertname=~"A|B"']),
        _rule("off", 0, ['alertname="A"'], enabled=False),
        _rule("other", 0, ['alertname="B"']),
    ]
    routes = route_alert({"alertname": "A", "container": "api"}, rules)
    assert [r.rule.name for r in routes] == ["first", "alpha", "zeta"]
    assert all(r.target == "api" for r in routes)


def test_routing_reports_a_target_that_cannot_be_rendered() -> None:
    routes = route_alert({"alertname": "A"}, [_rule("p", 1, ['alertname="A"'])])
    assert len(routes) == 1
    assert routes[0].target is None
    assert routes[0].missing_label == "container"
    assert "no label 'container'" in routes[0].error


@given(
    specs=st.lists(
        st.tuples(label_names, st.integers(min_value=-5, max_value=5), st.booleans(), st.booleans()),
        max_size=8,
        unique_by=lambda spec: spec[0],
    )
)
def test_routing_returns_exactly_the_enabled_matching_rules_in_order(
    specs: list[tuple[str, int, bool, bool]],
) -> None:
    rules = [
        _rule(name, priority, ['alertname="A"' if matching else 'alertname="B"'], enabled=enabled)
        for name, priority, enabled, matching in specs
    ]
    routes = route_alert({"alertname": "A", "container": "c"}, rules)
    expected = sorted((p, n) for n, p, enabled, matching in specs if enabled and matching)
    assert [(r.rule.priority, r.rule.name) for r in routes] == expected
