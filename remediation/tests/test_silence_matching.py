"""Silence matchers (Alertmanager's API form) mean what policy matchers mean: property tests."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from remediation.matchers import parse_matcher, quote
from remediation.silences import matcher_matches

NAMES = st.sampled_from(["container", "severity", "env"])
VALUES = st.text(alphabet="abc-.", max_size=4)
PATTERNS = st.sampled_from(["a.*", "b|c", "", ".+", "a-?b", "[ab]c"])


@given(
    name=NAMES,
    value=VALUES,
    regex=st.booleans(),
    equal=st.booleans(),
    pattern=PATTERNS,
    labels=st.dictionaries(NAMES, VALUES),
)
def test_a_silence_matcher_matches_exactly_like_the_same_policy_matcher(
    name: str, value: str, regex: bool, equal: bool, pattern: str, labels: dict[str, str]
) -> None:
    wanted = pattern if regex else value
    op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}[(regex, equal)]
    policy_matcher = parse_matcher(f"{name}{op}{quote(wanted)}")
    api_matcher = {"name": name, "value": wanted, "isRegex": regex, "isEqual": equal}
    assert matcher_matches(api_matcher, labels) == policy_matcher.matches(labels)
