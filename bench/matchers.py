"""Matcher evaluation time for pathological regexes on long label values (RE2: linear time).

Run: ``.venv/bin/python -m bench.matchers``. Prints the median and worst of 20 evaluations per case.
"""

from __future__ import annotations

import statistics
import time

CASES = [
    ('host=~"(a+)+"', "a" * 10240 + "b"),
    ('host=~"(a|aa)*c"', "a" * 10240),
    ('host=~"(.*a){20}"', "a" * 10240),
    ('host=~"(x+x+)+y"', "x" * 10240),
]


def main() -> None:
    import django

    django.setup()
    from remediation.matchers import parse_matcher

    for text, value in CASES:
        matcher = parse_matcher(text)
        times = []
        for _ in range(20):
            start = time.perf_counter()
            matcher.matches({"host": value})
            times.append((time.perf_counter() - start) * 1000)
        print(
            f"{text:24} value {len(value):6} chars: median {statistics.median(times):.2f} ms, max {max(times):.2f} ms"
        )


if __name__ == "__main__":
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoheal_site.settings")
    main()
