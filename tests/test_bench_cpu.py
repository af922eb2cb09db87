"""The benchmark's CPU split (bench/cpu.py) counts real CPU time where it was spent."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.cpu import KINDS, CpuSampler

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def _burn(seconds: float) -> None:
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


def test_cpu_of_the_harness_and_of_a_waited_child_is_counted_once_each() -> None:
    with CpuSampler(every=0.05) as cpu:
        _burn(0.3)
        subprocess.run([sys.executable, "-c", BURN], check=True, timeout=60)

    split = cpu.split
    assert split is not None
    assert set(split.seconds) == set(KINDS)
    assert split.seconds["harness"] >= 0.25
    # The child is a load generator the harness waited for: counted from its cutime, not twice.
    assert split.seconds["load"] >= 0.25
    assert split.seconds["other"] < 0.25, "the child is not counted a second time"
    assert split.cores_busy > 0
    assert "machine busy" in split.summary(10, "delivery")
