"""Alertmanager matchers: syntax, semantics and anchoring, with properties checked by hypothesis."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediation.matchers import MatcherError, matches_all, parse_matcher, parse_matchers, quote

label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True)
label_values = st.text(max_size=20)
label_sets = st.dictionaries(label_names, st.text(min_size=1, max_size=12), max_size=5)


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ('alertname="ContainerUnhealthy"', "alertname", "=", "ContainerUnhealthy"),
        ('severity=~"critical|page"', "severity", "=~", "critical|page"),
        ('env!="dev"', "env", "!=", "dev"),
        ("env!=dev", "env", "!=", "dev"),
        ("  job !~ node.*  ", "job", "!~", "node.*"),
        ('foo=""', "foo", "=", ""),
        ("foo=", "foo", "=", ""),
        (r'msg="say \"hi\""', "msg", "=", 'say "hi"'),
        (r'path="C:\\temp"', "path", "=", "C:\\temp"),
        (r'n=~"\d+"', "n", "=~", r"\d+"),
        (r'multi="a\nb"', "multi", "=", "a\nb"),
        ('x="a=b"', "x", "=", "a=b"),
        ("x=~a=b", "x", "=~", "a=b"),
    ],
)
def test_matcher_syntax_as_amtool_writes_it(text: str, name: str, op: str, value: str) -> None:
    matcher = parse_matcher(text)
    assert (matcher.name, matcher.op, matcher.value) == (name, op, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alertname", "not a matcher"),
        ('="x"', "not a matcher"),
        ('1abc="x"', "'1abc' is not a label name"),
        ('a="x', "never closed"),
        ('a="x"y"', "unescaped double quote"),
        ('a=x"y', "unescaped double quote"),
        ('a=~"("', "invalid regular expression"),
        ('a=~"(?=x)x"', "not supported by Alertmanager"),
        (r'a=~"(x)\1"', "not supported by Alertmanager"),
        ('{a="x"}', "without braces"),
    ],
)
def test_bad_matcher_is_an_error_naming_the_matcher(text: str, message: str) -> None:
    with pytest.raises(MatcherError) as caught:
        parse_matcher(text)
    assert message in str(caught.value)
    assert repr(text) in str(caught.value) or "braces" in message


@pytest.mark.parametrize(
    ("text", "value", "matching"),
    [
        (r'a=~"\\\\1"', r"\\1", "\\1"),  # an escaped backslash before a digit is no back-reference
        ('a=~"[(?=]+"', "[(?=]+", "(?="),  # inside a class these are plain characters
        ('a=~"(?P<word>x+)"', "(?P<word>x+)", "xx"),
    ],
)
def test_regexes_alertmanager_accepts_are_accepted(text: str, value: str, matching: str) -> None:
    matcher = parse_matcher(text)
    assert matcher.value == value
    assert matcher.matches({"a": matching})


def test_error_in_a_list_names_the_entry() -> None:
    with pytest.raises(MatcherError, match=r"^matchers\[1\]: 'severity=~\"\(\"'"):
        parse_matchers(['alertname="X"', 'severity=~"("'])


def test_missing_label_matches_as_empty_string() -> None:
    assert parse_matcher('foo=""').matches({"bar": "1"})
    assert not parse_matcher('foo!=""').matches({"bar": "1"})
    assert parse_matcher('foo!=""').matches({"foo": "1"})
    assert parse_matcher('foo=~"x|"').matches({})
    assert not parse_matcher('foo=~".+"').matches({})


def test_regex_is_anchored_to_the_whole_value() -> None:
    matcher = parse_matcher('severity=~"crit"')
    assert matcher.matches({"severity": "crit"})
    assert not matcher.matches({"severity": "critical"})
    assert not matcher.matches({"severity": "subcrit"})
    # Alternation is anchored as a group: ^(?:a|b)$, not ^a|b$.
    alternation = parse_matcher('severity=~"critical|page"')
    assert not alternation.matches({"severity": "critical-ish"})
    assert not alternation.matches({"severity": "xpage"})
    # A trailing newline is part of the value, not an end-of-line for $.
    assert not matcher.matches({"severity": "crit\n"})


def test_empty_matcher_list_matches_everything() -> None:
    assert matches_all([], {"alertname": "X"})


@given(name=label_names, value=label_values, labels=label_sets)
def test_equal_matches_exactly_the_value(name: str, value: str, labels: dict[str, str]) -> None:
    matcher = parse_matcher(f"{name}={quote(value)}")
    assert matcher.matches(labels) == (labels.get(name, "") == value)


@given(name=label_names, value=label_values, labels=label_sets)
def test_not_equal_is_the_negation_of_equal(name: str, value: str, labels: dict[str, str]) -> None:
    equal = parse_matcher(f"{name}={quote(value)}")
    not_equal = parse_matcher(f"{name}!={quote(value)}")
    assert not_equal.matches(labels) == (not equal.matches(labels))


@given(name=label_names, value=label_values, labels=label_sets)
def test_escaped_regex_equals_equality(name: str, value: str, labels: dict[str, str]) -> None:
    regex = parse_matcher(f"{name}=~{quote(re.escape(value))}")
    equal = parse_matcher(f"{name}={quote(value)}")
    negated = parse_matcher(f"{name}!~{quote(re.escape(value))}")
    assert regex.matches(labels) == equal.matches(labels)
    assert negated.matches(labels) == (not regex.matches(labels))


@given(name=label_names, value=st.text(min_size=1, max_size=10), prefix=label_values, suffix=label_values)
def test_regex_never_matches_a_strict_superstring(name: str, value: str, prefix: str, suffix: str) -> None:
    matcher = parse_matcher(f"{name}=~{quote(re.escape(value))}")
    superstring = prefix + value + suffix
    if superstring != value:
        assert not matcher.matches({name: superstring})
    assert matcher.matches({name: value})


@given(name=label_names, op=st.sampled_from(["=", "!=", "=~", "!~"]), value=label_values)
def test_printed_matcher_parses_back_to_itself(name: str, op: str, value: str) -> None:
    if op in ("=~", "!~"):
        value = re.escape(value)
    matcher = parse_matcher(f"{name}{op}{quote(value)}")
    assert parse_matcher(str(matcher)) == matcher
    assert matcher.value == value


def test_a_pathological_pattern_on_a_10kb_value_is_answered() -> None:
    # Backtracking engines take exponential time here (26 characters took 2.9 s); RE2 is linear.
    # The time is measured in bench/matchers.py; the test checks the answers.
    matcher = parse_matcher('host=~"(a+)+"')
    assert not matcher.matches({"host": "a" * 10240 + "b"})
    assert matcher.matches({"host": "a" * 10240})
    assert not parse_matcher('host=~"(x+x+)+y"').matches({"host": "x" * 10240})


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        # RE2, as Alertmanager: \d and \w are ASCII, "." does not cross a newline, $ is the very end.
        (r'n=~"\d+"', "٣٤", False),
        (r'n=~"\d+"', "34", True),
        (r'n=~"\w+"', "é", False),
        ('n=~"a.b"', "a\nb", False),
        ('n=~"(?s)a.b"', "a\nb", True),
        ('n=~"(?i)crit"', "CRIT", True),
        (r'n=~"\pL+"', "éa", True),
    ],
)
def test_regex_semantics_are_alertmanagers_re2(text: str, value: str, expected: bool) -> None:
    assert parse_matcher(text).matches({"n": value}) is expected


# A grammar of regexes whose meaning is the same in RE2 and in Python's re on ASCII text without
# newlines: literals, ".", classes, groups, alternation and the greedy quantifiers.
_atoms = st.sampled_from(["a", "b", "c", ".", "[ab]", "[^a]", "x", r"\.", "[a-c]"])


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, inner).map("".join),
        st.tuples(inner, inner).map("|".join),
        inner.map(lambda r: f"(?:{r})"),
        st.tuples(inner, st.sampled_from(["*", "+", "?", "{1,2}"])).map(lambda t: f"({t[0]}){t[1]}"),
    )


regexes = st.recursive(_atoms, _extend, max_leaves=8)


@given(pattern=regexes, value=st.text(alphabet="abcx.", max_size=12), negate=st.booleans())
def test_re2_matching_agrees_with_the_documented_semantics(pattern: str, value: str, negate: bool) -> None:
    # Documented: the regex must match the whole value (^(?:re)$), a missing label is "", and !~ is
    # the negation of =~.
    expected = re.fullmatch(f"(?:{pattern})", value) is not None
    matcher = parse_matcher(f"a{'!~' if negate else '=~'}{quote(pattern)}")
    assert matcher.matches({"a": value}) is (expected != negate)
    assert matcher.matches({}) is ((re.fullmatch(f"(?:{pattern})", "") is not None) != negate)
