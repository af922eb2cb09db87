"""Autoheal settings: read from the environment only (see docs/configuration in README).

Embedded defaults (SQLite under AUTOHEAL_DATA_DIR, local-memory cache, in-process pub/sub) make the
README's run command work with nothing installed. ``AUTOHEAL_ENV=production`` fails closed: no
default secret key, DEBUG off, explicit hosts.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from autoheal_site.env import (
    env_bool,
    env_int,
    env_list,
    env_secret,
    env_secret_list,
    env_str,
    parse_rate,
)
from remediation.trust import parse_url_prefixes

BASE_DIR = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"

AUTOHEAL_ENV = env_str("AUTOHEAL_ENV", "development").strip().lower()
PRODUCTION = AUTOHEAL_ENV == "production"
DATA_DIR = Path(env_str("AUTOHEAL_DATA_DIR", str(BASE_DIR / "var")))

# Off unless asked for explicitly, in every environment: the debug page is for a developer's own
# machine. When on, it masks every setting that holds a credential (autoheal_site/debug_page.py).
DEBUG = env_bool("AUTOHEAL_DEBUG", False)
DEFAULT_EXCEPTION_REPORTER_FILTER = "autoheal_site.debug_page.CredentialMaskingFilter"
SECRET_KEY = env_secret("SECRET_KEY")
ALLOWED_HOSTS = env_list("AUTOHEAL_ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,[::1],testserver")

if PRODUCTION:
    problems = []
    if not SECRET_KEY:
        problems.append("SECRET_KEY (or SECRET_KEY_FILE) is not set")
    elif len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        problems.append("SECRET_KEY is too short: use at least 50 random characters")
    if DEBUG:
        problems.append("AUTOHEAL_DEBUG is on: set it to false (or leave it unset)")
    if not ALLOWED_HOSTS:
        problems.append("AUTOHEAL_ALLOWED_HOSTS is not set: list the host names clients use, comma separated")
    elif any(h in ("*", ".") or h.startswith("*") for h in ALLOWED_HOSTS):
        problems.append("AUTOHEAL_ALLOWED_HOSTS must list explicit host names, no wildcard")
    if problems:
        raise ImproperlyConfigured("refusing to start in production: " + "; ".join(problems))
elif not SECRET_KEY:
    # Development only: a fixed, obviously insecure key so sessions survive restarts.
    SECRET_KEY = "autoheal-development-only-insecure-key-never-use-in-production-0123456789"  # noqa: S105

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_eventstream",
    "corsheaders",
    "csp",
    "django_prometheus",
    "accounts",
    "audit",
    "remediation",
    "dashboard",
    "operations",
    "observability",
    "notifications",
    "fleet",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "accounts.middleware.UntrustedProxyHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "accounts.middleware.XSSProtectionHeaderMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # After every header-setting middleware, so their headers are on 401/429/503 answers too.
    "accounts.middleware.MetricsTokenMiddleware",
    "accounts.ratelimit.RateLimitMiddleware",
    # After the limiter, so refused tokens are counted (guessing keys is rate-limited).
    "accounts.authentication.BearerTokenMiddleware",
    "accounts.middleware.MalformedRequestMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "autoheal_site.urls"
WSGI_APPLICATION = "autoheal_site.wsgi.application"
ASGI_APPLICATION = "autoheal_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_secret("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"].setdefault("OPTIONS", {})
        # Under ASGI every request thread would keep its own persistent connection until
        # PostgreSQL refuses clients; a bounded pool is the safe way to reuse connections.
        if env_bool("AUTOHEAL_DB_POOL", False):
            DATABASES["default"]["OPTIONS"]["pool"] = {
                "min_size": 1,
                "max_size": env_int("AUTOHEAL_DB_POOL_SIZE", 8),
            }
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "autoheal.sqlite3"),
            "OPTIONS": {
                # WAL lets the web and worker threads read while one writes; IMMEDIATE takes the
                # write lock at BEGIN so two writers never deadlock upgrading a read lock.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            "TEST": {"NAME": str(DATA_DIR / "test-autoheal.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and pub/sub ----------------------------------------------------------------------
REDIS_URL = env_secret("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "autoheal"}}

# --- Live stream (GET /events, see audit/streams/) -------------------------------------------
# Replay reads the audit table (the audit id is the event id); only ops and admin may read. With
# REDIS_URL, writers in any process ring each web process through Redis pub/sub; without it, the
# hand-over is in-process and other processes' events arrive by the poll. EVENTSTREAM_REDIS is
# deliberately unset: the library's own Redis listener delivers in arrival order (see audit/streams/).
EVENTSTREAM_STORAGE_CLASS = "audit.streams.storage.AuditStorage"
EVENTSTREAM_CHANNELMANAGER_CLASS = "audit.streams.storage.AuditChannelManager"
AUTOHEAL_STREAM_KEEPALIVE_SECONDS = float(env_int("AUTOHEAL_STREAM_KEEPALIVE_SECONDS", 15))
AUTOHEAL_STREAM_POLL_SECONDS = float(env_int("AUTOHEAL_STREAM_POLL_SECONDS", 1))
AUTOHEAL_STREAM_MAX_PENDING = env_int("AUTOHEAL_STREAM_MAX_PENDING", 1000)
AUTOHEAL_STREAM_REPLAY_MAX = env_int("AUTOHEAL_STREAM_REPLAY_MAX", 10000)
# An open stream re-checks its credential this often (at most 30 s; it wakes at each keep-alive,
# so the keep-alive may not be longer), and one user may hold this many streams at once.
AUTOHEAL_STREAM_RECHECK_SECONDS = env_int("AUTOHEAL_STREAM_RECHECK_SECONDS", 30)
AUTOHEAL_STREAM_MAX_PER_USER = env_int("AUTOHEAL_STREAM_MAX_PER_USER", 20)
if not 0 < AUTOHEAL_STREAM_RECHECK_SECONDS <= 30:
    raise ImproperlyConfigured("AUTOHEAL_STREAM_RECHECK_SECONDS must be from 1 to 30")
if not 0 < AUTOHEAL_STREAM_KEEPALIVE_SECONDS <= AUTOHEAL_STREAM_RECHECK_SECONDS:
    raise ImproperlyConfigured("AUTOHEAL_STREAM_KEEPALIVE_SECONDS must be from 1 to AUTOHEAL_STREAM_RECHECK_SECONDS")
if AUTOHEAL_STREAM_MAX_PER_USER <= 0:
    raise ImproperlyConfigured("AUTOHEAL_STREAM_MAX_PER_USER must be a positive integer")

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# OpenID Connect login (mozilla-django-oidc, code flow + PKCE) when a client id and the provider
# (a discovery URL or explicit endpoints) are set; local Django accounts otherwise. See README.
OIDC_RP_CLIENT_ID = env_str("OIDC_RP_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = env_secret("OIDC_RP_CLIENT_SECRET")
OIDC_OP_DISCOVERY_URL = env_str("OIDC_OP_DISCOVERY_URL")
OIDC_OP_ISSUER = env_str("OIDC_OP_ISSUER")
OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("OIDC_OP_AUTHORIZATION_ENDPOINT")
OIDC_OP_TOKEN_ENDPOINT = env_str("OIDC_OP_TOKEN_ENDPOINT")
OIDC_OP_USER_ENDPOINT = env_str("OIDC_OP_USER_ENDPOINT")
OIDC_OP_JWKS_ENDPOINT = env_str("OIDC_OP_JWKS_ENDPOINT")
OIDC_RP_SIGN_ALGO = env_str("OIDC_RP_SIGN_ALGO", "RS256")
if OIDC_RP_SIGN_ALGO not in ("RS256", "ES256"):
    raise ImproperlyConfigured("OIDC_RP_SIGN_ALGO must be RS256 or ES256")
OIDC_RP_SCOPES = env_str("OIDC_RP_SCOPES", "openid email profile")
OIDC_ROLES_CLAIM = env_str("OIDC_ROLES_CLAIM", "roles")
OIDC_API_AUDIENCE = env_str("OIDC_API_AUDIENCE")
OIDC_JWT_LEEWAY_SECONDS = env_int("OIDC_JWT_LEEWAY_SECONDS", 10)
OIDC_USE_PKCE = True
OIDC_TIMEOUT = env_int("OIDC_TIMEOUT", 5)
OIDC_ENABLED = bool(OIDC_RP_CLIENT_ID and (OIDC_OP_DISCOVERY_URL or OIDC_OP_AUTHORIZATION_ENDPOINT))
if OIDC_ENABLED and not OIDC_RP_CLIENT_SECRET:
    raise ImproperlyConfigured("OIDC_RP_CLIENT_SECRET (or OIDC_RP_CLIENT_SECRET_FILE) is not set")
# With OpenID login the local password form is off unless asked for (a break-glass account).
AUTOHEAL_LOCAL_LOGIN = env_bool("AUTOHEAL_LOCAL_LOGIN", not OIDC_ENABLED)
AUTHENTICATION_BACKENDS = [
    *(["accounts.oidc.AutohealOIDCBackend"] if OIDC_ENABLED else []),
    *(["django.contrib.auth.backends.ModelBackend"] if AUTOHEAL_LOCAL_LOGIN else []),
    "accounts.backends.RolePermissionBackend",
]
# A session lasts a working day by default: roles are re-read from the provider at each login.
SESSION_COOKIE_AGE = env_int("AUTOHEAL_SESSION_SECONDS", 8 * 3600)
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/ops/"
LOGOUT_REDIRECT_URL = "/"

# --- Internationalisation and time ----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS: list[Path] = []
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Bearer classes first: their challenge makes DRF answer 401, not 403, to anonymous callers.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "accounts.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Closed by default: a new endpoint needs the ops role unless it says otherwise.
    "DEFAULT_PERMISSION_CLASSES": ["accounts.roles.IsOps"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON bodies only: a form post is what a cross-site page can send without a CORS preflight.
    "DEFAULT_PARSER_CLASSES": ["autoheal_site.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Autoheal API",
    "DESCRIPTION": "Auto-remediation for Prometheus alerts: webhook, audit trail, switch, ack.",
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from this server's static files: no CDN, so the CSP can stay default-src 'self'.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Authentication, roles and the rate limiter answer 401/403/429 for every secured operation.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "accounts.schema.document_refusals"],
}

# --- Security headers -----------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_HSTS_SECONDS = 31536000 if PRODUCTION else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SESSION_COOKIE_HTTPONLY = True
# TLS is terminated by the reverse proxy in front of Autoheal; it redirects plain HTTP.
SECURE_SSL_REDIRECT = env_bool("AUTOHEAL_SSL_REDIRECT", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_list("AUTOHEAL_TRUSTED_PROXIES") else None
SILENCED_SYSTEM_CHECKS = ["security.W008"] if not SECURE_SSL_REDIRECT else []
CSRF_TRUSTED_ORIGINS = env_list("AUTOHEAL_CSRF_TRUSTED_ORIGINS")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
    }
}
CORS_ALLOWED_ORIGINS = env_list("AUTOHEAL_CORS_ORIGINS")

# --- Autoheal -------------------------------------------------------------------------------
AUTOHEAL_ENABLED = env_bool("AUTOHEAL_ENABLED", True)
AUTOHEAL_DRY_RUN = env_bool("AUTOHEAL_DRY_RUN", False)
AUTOHEAL_PORT = env_int("AUTOHEAL_PORT", 9009)
AUTOHEAL_WEBHOOK_TOKENS = env_secret_list("AUTOHEAL_WEBHOOK_TOKENS")
AUTOHEAL_WEBHOOK_MAX_BYTES = env_int("AUTOHEAL_WEBHOOK_MAX_BYTES", 1024 * 1024)
AUTOHEAL_AUDIT_JSONL = env_str("AUTOHEAL_AUDIT_JSONL", str(DATA_DIR / "audit.jsonl"))
# How audit events join the hash chain (docs/audit-chain.md): "sealer" (writers commit to a pending
# table without waiting on each other; a sealer in the worker or `audit_seal` chains them in
# batches), "inline" (each writer chains its own events under one lock: one process, SQLite), or
# "auto" (sealer on PostgreSQL, inline otherwise).
AUTOHEAL_AUDIT_CHAIN = env_str("AUTOHEAL_AUDIT_CHAIN", "auto").strip().lower()
if AUTOHEAL_AUDIT_CHAIN not in ("auto", "sealer", "inline"):
    raise ImproperlyConfigured("AUTOHEAL_AUDIT_CHAIN must be auto, sealer or inline")
AUTOHEAL_RATE_LIMIT = parse_rate(env_str("AUTOHEAL_RATE_LIMIT", "100/60s"))
AUTOHEAL_WEBHOOK_RATE_LIMIT = parse_rate(env_str("AUTOHEAL_WEBHOOK_RATE_LIMIT", "6000/60s"))
AUTOHEAL_TRUSTED_PROXIES = env_list("AUTOHEAL_TRUSTED_PROXIES")
AUTOHEAL_GRAFANA_URL = env_str("AUTOHEAL_GRAFANA_URL")
# Embed the Grafana dashboard in /ops/ (its origin is then allowed in frame-src on that page only);
# needs Grafana's allow_embedding, so it is off unless asked for.
AUTOHEAL_GRAFANA_EMBED = env_bool("AUTOHEAL_GRAFANA_EMBED", False)
AUTOHEAL_PROMETHEUS_URL = env_str("AUTOHEAL_PROMETHEUS_URL")
# A comma list (an HA pair): silences are checked, and created with silence_during_action.
AUTOHEAL_ALERTMANAGER_URL = env_str("AUTOHEAL_ALERTMANAGER_URL")
# Notification targets, NAME=APPRISE_URL or NAME[event|event]=APPRISE_URL, comma list; secrets.
AUTOHEAL_NOTIFY_URLS = env_secret("AUTOHEAL_NOTIFY_URLS")
# The address operators use to reach Autoheal (printed by manage.py autoheal_links).
AUTOHEAL_PUBLIC_URL = env_str("AUTOHEAL_PUBLIC_URL", "http://localhost:9009")
AUTOHEAL_METRICS_TOKEN = env_secret("AUTOHEAL_METRICS_TOKEN")
AUTOHEAL_SELF_CONTAINER = env_str("AUTOHEAL_SELF_CONTAINER", os.environ.get("HOSTNAME", ""))
DOCKER_HOST = env_str("DOCKER_HOST")
# Remediation safety (see README "Safety"): circuit breaker, backoff, leases, retries.
AUTOHEAL_CIRCUIT_MAX_ACTIONS = env_int("AUTOHEAL_CIRCUIT_MAX_ACTIONS", 10)
AUTOHEAL_CIRCUIT_MAX_FAILURES = env_int("AUTOHEAL_CIRCUIT_MAX_FAILURES", 5)
AUTOHEAL_CIRCUIT_WINDOW_SECONDS = env_int("AUTOHEAL_CIRCUIT_WINDOW_SECONDS", 600)
AUTOHEAL_CIRCUIT_COOLOFF_SECONDS = env_int("AUTOHEAL_CIRCUIT_COOLOFF_SECONDS", 900)
AUTOHEAL_BACKOFF_BASE_SECONDS = env_int("AUTOHEAL_BACKOFF_BASE_SECONDS", 10)
AUTOHEAL_BACKOFF_MAX_SECONDS = env_int("AUTOHEAL_BACKOFF_MAX_SECONDS", 300)
AUTOHEAL_BACKOFF_RESET_SECONDS = env_int("AUTOHEAL_BACKOFF_RESET_SECONDS", 600)
AUTOHEAL_LEASE_SECONDS = env_int("AUTOHEAL_LEASE_SECONDS", 60)
AUTOHEAL_MAX_RETRIES = env_int("AUTOHEAL_MAX_RETRIES", 3)
AUTOHEAL_WORKER_POLL_SECONDS = env_int("AUTOHEAL_WORKER_POLL_SECONDS", 2)
AUTOHEAL_WAKEUP = env_str("AUTOHEAL_WAKEUP", "auto").strip().lower()  # auto | postgres | redis | local
# What actions may reach at all, decided by the operator (docs/security.md); a policy (the admin
# role) can only stay within these. Empty means none.
AUTOHEAL_WEBHOOK_ACTION_ALLOW = env_list("AUTOHEAL_WEBHOOK_ACTION_ALLOW")
AUTOHEAL_COMMAND_ALLOW = env_list("AUTOHEAL_COMMAND_ALLOW")
AUTOHEAL_ACTION_SECRETS = env_list("AUTOHEAL_ACTION_SECRETS")
try:
    parse_url_prefixes(AUTOHEAL_WEBHOOK_ACTION_ALLOW, source="AUTOHEAL_WEBHOOK_ACTION_ALLOW")
except ValueError as _exc:
    raise ImproperlyConfigured(str(_exc)) from None
if _relative := [p for p in AUTOHEAL_COMMAND_ALLOW if not os.path.isabs(p)]:
    raise ImproperlyConfigured(f"AUTOHEAL_COMMAND_ALLOW lists absolute paths only, not {', '.join(_relative)}")
# The fleet (see the deployment guide, "Running a fleet"): the host whose Docker Engine the central
# worker itself acts on, how long a job placed on an offline host waits, and the agents' long poll.
AUTOHEAL_LOCAL_HOST = env_str("AUTOHEAL_LOCAL_HOST").strip()
AUTOHEAL_AGENT_JOB_TTL_SECONDS = env_int("AUTOHEAL_AGENT_JOB_TTL_SECONDS", 600)
AUTOHEAL_AGENT_POLL_SECONDS = env_int("AUTOHEAL_AGENT_POLL_SECONDS", 20)
# An agent not heard from for this long counts as not connected (the long poll keeps it in touch).
AUTOHEAL_AGENT_CONNECTED_SECONDS = env_int("AUTOHEAL_AGENT_CONNECTED_SECONDS", 60)
for _name in (
    "AUTOHEAL_CIRCUIT_MAX_ACTIONS",
    "AUTOHEAL_CIRCUIT_MAX_FAILURES",
    "AUTOHEAL_CIRCUIT_WINDOW_SECONDS",
    "AUTOHEAL_LEASE_SECONDS",
    "AUTOHEAL_WORKER_POLL_SECONDS",
    "AUTOHEAL_AGENT_JOB_TTL_SECONDS",
    "AUTOHEAL_AGENT_POLL_SECONDS",
    "AUTOHEAL_AGENT_CONNECTED_SECONDS",
):
    if globals()[_name] <= 0:
        raise ImproperlyConfigured(f"{_name} must be a positive integer")
if AUTOHEAL_WAKEUP not in ("auto", "postgres", "redis", "local"):
    raise ImproperlyConfigured("AUTOHEAL_WAKEUP must be auto, postgres, redis or local")

# --- Logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"redact_secrets": {"()": "accounts.redact.RedactSecretsFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_secrets"]}},
    "root": {"handlers": ["console"], "level": env_str("AUTOHEAL_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
