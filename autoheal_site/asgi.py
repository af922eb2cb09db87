"""ASGI entry point: daphne serves HTTP and the SSE stream from here.

``ASGIGuard`` (autoheal_site/serving.py) ignores a ``Daphne-Root-Path`` that is not from a trusted
proxy.
"""

import gc
import os

from django.core.asgi import get_asgi_application

from autoheal_site.startup import settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoheal_site.settings")
settings_or_exit()

_django = get_asgi_application()

from autoheal_site.serving import ASGIGuard  # noqa: E402  # needs the settings loaded above

application = ASGIGuard(_django)

# Garbage collection stops the event loop, and a full collection walks every tracked object: with
# hundreds of open streams that was a 100-300 ms pause every few seconds (bench/sse_fanout.py).
# Everything imported so far lives as long as the process, so it is moved out of the collector's
# reach; and young collections run every 50,000 allocations instead of 700, so the short-lived
# objects of each delivered event die young instead of being promoted and walked again and again.
gc.freeze()
gc.set_threshold(50_000, 20, 10)
