"""Autoheal's benchmarks: bounded loads on loopback, each figure beside a same-run baseline.

Run everything with ``make bench`` (``python -m bench.run``); see docs/performance.md.
"""
