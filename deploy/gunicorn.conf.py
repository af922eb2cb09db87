"""gunicorn settings for Autoheal's request/response paths (webhook, API, console, admin, /metrics).

The live stream (``/events``) is long-lived and is served by daphne instead; see
docs/performance.md ("Serving") for the measurements behind this split. Every value can be
overridden on the command line or with ``GUNICORN_CMD_ARGS``.
"""

import os

# Inside its container the web process listens on every interface of the container's own network.
bind = f"{os.environ.get('AUTOHEAL_BIND', '0.0.0.0')}:{os.environ.get('AUTOHEAL_PORT', '9009')}"  # noqa: S104  # nosec B104: inside the container's own network namespace
wsgi_app = "autoheal_site.wsgi:application"
workers = int(os.environ.get("AUTOHEAL_WEB_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("AUTOHEAL_WEB_THREADS", "4"))
# Alertmanager keeps its connection open between deliveries; gthread workers honour keep-alive.
keepalive = 5
timeout = 30
graceful_timeout = 20
# Heartbeat files on tmpfs: a container's overlay filesystem can stall the worker heartbeat.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108  # nosec B108: gunicorn's own heartbeat files
accesslog = None
errorlog = "-"
loglevel = os.environ.get("AUTOHEAL_LOG_LEVEL", "info").lower()
# gunicorn believes X-Forwarded-Proto and a SCRIPT_NAME header from the peers listed here (by
# default loopback). Autoheal decides that itself, from AUTOHEAL_TRUSTED_PROXIES only (see
# docs/security.md): gunicorn trusts no peer and passes no routing header through.
forwarded_allow_ips = ""
forwarder_headers = ""
