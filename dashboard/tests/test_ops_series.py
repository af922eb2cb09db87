"""The Command Center's series and metrics from per-day rows: pure, checked against a literal reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dashboard.selectors import chart_data, success_metrics_from, window_totals

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

day_rows = st.dictionaries(
    st.integers(min_value=0, max_value=29),
    st.fixed_dictionaries(
        {
            "ok": st.integers(0, 50),
            "fail": st.integers(0, 50),
            "unknown": st.integers(0, 5),
            "judged_false": st.integers(0, 5),
            "marked": st.integers(0, 10),
            "ttr_seconds": st.integers(1, 3600),
        }
    ),
)


def rows(raw: dict[int, dict[str, int]]) -> list[dict[str, Any]]:
    out = []
    for back, row in sorted(raw.items(), reverse=True):
        day = datetime.combine(NOW.date() - timedelta(days=back), datetime.min.time(), tzinfo=UTC)
        ttr = timedelta(seconds=row["ttr_seconds"] * row["ok"]) if row["ok"] else None
        out.append({**{k: v for k, v in row.items() if k != "ttr_seconds"}, "day": day, "ttr": ttr})
    return out


@given(day_rows)
def test_every_day_is_a_point_and_rates_are_only_drawn_where_there_were_actions(raw: dict[int, dict[str, int]]) -> None:
    data = chart_data(rows(raw), now=NOW)

    assert len(data["labels"]) == 30 and data["labels"][-1] == "2026-11-27"
    for back in range(30):
        index = 29 - back
        row = raw.get(back)
        total = row["ok"] + row["fail"] + row["unknown"] if row else 0
        assert data["ok"][index] + data["fail"][index] + data["unknown"][index] == total
        if total:
            assert data["success_rate"][index] == round(100 * row["ok"] / total, 1)  # type: ignore[index]
        else:
            assert data["success_rate"][index] is None
        if row and row["ok"]:
            assert data["mttr_seconds"][index] == row["ttr_seconds"]
        else:
            assert data["mttr_seconds"][index] is None


@given(day_rows)
def test_window_metrics_equal_a_literal_count_over_the_days(raw: dict[int, dict[str, int]]) -> None:
    rate, mttr, false_positive = success_metrics_from(window_totals(rows(raw)))

    total = sum(r["ok"] + r["fail"] + r["unknown"] for r in raw.values())
    ok = sum(r["ok"] for r in raw.values())
    if not total:
        assert (rate.met, false_positive.met) == (None, None)
        return
    assert rate.value == ok / total
    assert rate.met == (ok / total > 0.95)
    assert false_positive.value == sum(r["judged_false"] for r in raw.values()) / total
    if ok:
        expected = sum(r["ttr_seconds"] * r["ok"] for r in raw.values()) / ok
        assert mttr.value is not None and abs(mttr.value - expected) < 1e-6
        assert mttr.met == (mttr.value < 120)
    else:
        assert mttr.value is None and mttr.met is None
