"""The production settings plus one no-op route, so baselines run on the very same stack.

Servers started by the benchmark use ``DJANGO_SETTINGS_MODULE=bench.settings``: every middleware,
database option and rate limit is Autoheal's own; only the URL configuration gains
``POST /bench/noop``, so production code carries nothing for benchmarks.
"""

from autoheal_site.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
