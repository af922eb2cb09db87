"""The result table: each figure beside its same-run baseline, the ratio, and the target."""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Row:
    """One measured figure."""

    scenario: str
    figure: str
    value: float | None
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline_value:
            return None
        return self.value / self.baseline_value


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def render(rows: list[Row]) -> str:
    """A Markdown table (it reads fine in a terminal and pastes into docs/performance.md)."""
    header = ["scenario", "figure", "value", "baseline (same run)", "ratio", "target", "met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        base = f"{_fmt(row.baseline_value)} ({row.baseline})" if row.baseline else "-"
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        value = f"{_fmt(row.value)} {row.unit}".strip()
        if row.note:
            value += f" ({row.note})"
        lines.append(f"| {row.scenario} | {row.figure} | {value} | {base} | {ratio} | {row.target or '-'} | {met} |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    """What the numbers were measured on."""

    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    mem_kb = 0
    cpu = "unknown"
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import django

    return {
        "cpus": first_line(["nproc"]),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": first_line(["psql", "--version"]),
        "redis": first_line(["redis-server", "--version"]),
        "wrk": first_line(["wrk", "--version"]),
        "docker": first_line(["dockerd", "--version"]),
    }


def save(path: Path, rows: list[Row], meta: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": [asdict(r) | {"ratio": r.ratio} for r in rows]}, indent=2))
