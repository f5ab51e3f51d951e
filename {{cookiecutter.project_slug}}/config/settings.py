"""Settings for {{ cookiecutter.project_name }}, read from the environment and `.env`.

Safe by default: DEBUG is off unless set, and without DEBUG the project refuses to start
without a SECRET_KEY and turns on HTTPS-only cookies and HSTS.
"""

from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
{%- if cookiecutter.channel_layer == "redis" %}

from config.redis_servers import redis_servers
{%- endif %}

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set SECRET_KEY in the environment or .env (DEBUG is off).")
    SECRET_KEY = "insecure-development-only-key"  # noqa: S105

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "accounts.admin_config.AdminConfig",  # Django's admin, with log-in throttling
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "accounts",
    "ops",
{%- if cookiecutter.use_custom_user_model %}
    "users",
{%- endif %}
    "chat",
]

MIDDLEWARE = [
    # /healthz, /readyz and /metrics, answered before the rest: no HTTPS redirect, no host
    # check, no session (ops/middleware.py).
    "ops.middleware.OperationsEndpointsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "accounts.middleware.NoStoreWithSessionMiddleware",
    # Last, and sync-only: every middleware above then runs on the request's thread in one
    # go (see config/middleware.py). Add yours above it.
    "config.middleware.MethodNotAllowedPageMiddleware",
]

ROOT_URLCONF = "config.urls"

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
                "chat.context_processors.chat_widget",
            ],
        },
    },
]

ASGI_APPLICATION = "config.asgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # .env says sqlite:///db.sqlite3: keep it next to manage.py whatever the working directory.
    if DATABASES["default"]["NAME"] != ":memory:":
        DATABASES["default"]["NAME"] = BASE_DIR / DATABASES["default"]["NAME"]
    # IMMEDIATE transactions and a busy timeout let concurrent writers queue instead of
    # failing with "database is locked"; WAL lets readers run beside the writer.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
{%- if cookiecutter.database == "postgresql" %}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool("DB_POOL", default=True):
    # Each server process borrows connections from a pool of its own (psycopg_pool) and
    # gives them back after each request or socket task: it never holds more than
    # DB_POOL_MAX_SIZE, however many sockets and requests it serves. Size PostgreSQL's
    # max_connections for (processes x DB_POOL_MAX_SIZE) plus management commands.
    if DATABASES["default"]["CONN_MAX_AGE"]:
        raise ImproperlyConfigured("Set CONN_MAX_AGE=0 with the connection pool (DB_POOL=true): the pool keeps them.")
    # A connection the pool hands out is checked first: after PostgreSQL restarts, the
    # first request of each process gets a fresh connection instead of an error. The
    # engine is Django's own, with that check made without a round trip to the server
    # unless the connection's socket shows it was closed (config/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "config.postgresql"
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DB_POOL_MAX_SIZE", default=10),
        # Seconds a request waits for a free connection before it fails (as a busy database).
        "timeout": env.float("DB_POOL_TIMEOUT", default=10),
    }
{%- endif %}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
{%- if cookiecutter.use_custom_user_model %}

AUTH_USER_MODEL = "users.User"
{%- endif %}

{% if cookiecutter.channel_layer == "redis" -%}
# One Redis at REDIS_URL or, with REDIS_SENTINELS (host:port,...) and REDIS_SENTINEL_MASTER,
# the primary those Sentinels name, followed through a failover without a restart
# (config/redis_servers.py). REDIS_PASSWORD / REDIS_SENTINEL_PASSWORD if they need one.
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
REDIS_SERVERS = redis_servers(
    url=REDIS_URL,
    sentinels=env.list("REDIS_SENTINELS", default=[]),
    master=env.str("REDIS_SENTINEL_MASTER", default=""),
    password=env.str("REDIS_PASSWORD", default=""),
    sentinel_password=env.str("REDIS_SENTINEL_PASSWORD", default=""),
)
CHANNEL_LAYERS = {
    "default": {
        # channels_redis's RedisChannelLayer, starting its connections over after a failure.
        "BACKEND": "config.redis_layer.ReconnectingRedisChannelLayer",
        "CONFIG": {
            # Read timeouts past channels_redis's 5 s blocking receive (config/redis_servers.py).
            "hosts": [REDIS_SERVERS.channel_layer_host()],
            # Each process's room hub gets every room event of the process (chat/realtime/hub.py).
            "channel_capacity": {"*!chat-hub-*": 10_000},
        },
    },
}
# Rate-limit counters and other cache users, shared by every process.
CACHES = {"default": REDIS_SERVERS.cache()}
{%- else -%}
# One server process: the in-memory layer. Use Redis (channels_redis) for several.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
{%- endif %}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:list"
LOGOUT_REDIRECT_URL = "login"
# Sign-up mails a link; the account exists once its owner follows it (accounts/services.py).
ACCOUNT_SIGNUP_LINK_MAX_AGE = env.int("ACCOUNT_SIGNUP_LINK_MAX_AGE", default=60 * 60 * 24 * 2)
# Failed log-ins and sign-up mails, e.g.
# ACCOUNT_RATE_LIMITS=login_username=10/15m,login_ip=50/15m,signup_ip=10/h,signup_email=3/h
ACCOUNT_RATE_LIMITS = env.dict("ACCOUNT_RATE_LIMITS", default={})

# E-mail (sign-up links): printed on the console with DEBUG, otherwise sent over SMTP as
# EMAIL_URL says, e.g. smtp+tls://user:password@smtp.example.com:587 (see README).
vars().update(env.email_url("EMAIL_URL", default="consolemail://" if DEBUG else "smtp://localhost:25"))
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="noreply@{{ cookiecutter.domain_name }}")

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="{{ cookiecutter.timezone }}")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# Production hardening: on unless DEBUG; each can be overridden from the environment.
# Only behind a proxy that terminates TLS and always sets X-Forwarded-Proto: without one,
# any client could claim HTTPS with that header.
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 60 * 60 * 24 * 365)
# HSTS for subdomains, and asking browsers to preload it, bind every subdomain to HTTPS for
# a long time (preload lists take months to leave): the domain's owner opts in.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [
    *(["security.W005"] if not SECURE_HSTS_INCLUDE_SUBDOMAINS else []),
    *(["security.W021"] if not SECURE_HSTS_PRELOAD else []),
]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Scripts and styles only from this site's own files: no inline scripts, styles or handlers
# anywhere, so an injected <script> or onclick= does not run. Websockets go to this origin.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# Browser features the chat never uses, off for this site and anything it embeds.
UNUSED_BROWSER_FEATURES = ["accelerometer", "camera", "geolocation", "gyroscope", "magnetometer", "microphone", "usb"]
PERMISSIONS_POLICY = {feature: [] for feature in [*UNUSED_BROWSER_FEATURES, "payment"]}

# The admin's address: a predictable /admin/ invites password guessing; set your own.
ADMIN_URL = env.str("ADMIN_URL", default="admin/").strip().strip("/") + "/"
if ADMIN_URL == "/":
    raise ImproperlyConfigured("ADMIN_URL must name a path of its own, e.g. ADMIN_URL=admin-7f3c/.")

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# "text" (the message alone) or "json": one JSON object per line, for a log collector.
LOG_FORMAT = env.str("LOG_FORMAT", default="text").lower()
LOG_FORMATTERS = {
    "text": {"format": "%(message)s"},
    "json": {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": "%(levelname)s %(name)s %(message)s",
        "rename_fields": {"levelname": "level", "name": "logger"},
        "timestamp": "time",  # ISO 8601, UTC
    },
}
if LOG_FORMAT not in LOG_FORMATTERS:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}.")
# Every record goes to the console once, through the root logger. Django's default config
# gives the "django" logger a console handler of its own while DEBUG is on; left in place,
# each runserver, request and autoreload line would print twice.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {LOG_FORMAT: LOG_FORMATTERS[LOG_FORMAT]},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django": {"handlers": [], "level": LOG_LEVEL, "propagate": True}},
}

# Errors to Sentry when SENTRY_DSN is set (the Django integration: unhandled exceptions
# and ERROR log records, without personal data unless SENTRY_SEND_DEFAULT_PII is on).
SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        integrations=[DjangoIntegration()],
        environment=env.str("SENTRY_ENVIRONMENT", default="production"),
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
        send_default_pii=env.bool("SENTRY_SEND_DEFAULT_PII", default=False),
    )

# Operations endpoints (ops/): /readyz's per-check timeout, and the bearer token /metrics
# asks for (unset: /metrics answers 404).
READYZ_TIMEOUT_SECONDS = env.float("READYZ_TIMEOUT_SECONDS", default=2.0)
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
if METRICS_TOKEN and len(METRICS_TOKEN) < 24:
    raise ImproperlyConfigured(
        "METRICS_TOKEN must be 24 characters or more: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )

# Chat settings (see chat/conf.py for every setting and its default).
CHAT_PAGE_SIZE = env.int("CHAT_PAGE_SIZE", default=50)
CHAT_MAX_MESSAGE_LENGTH = env.int("CHAT_MAX_MESSAGE_LENGTH", default=4000)
# Open websockets per user on one server process (a tab holds one or two); past it, 4429.
CHAT_MAX_SOCKETS_PER_USER = env.int("CHAT_MAX_SOCKETS_PER_USER", default=30)
# Per-user limits, e.g. CHAT_RATE_LIMITS=send=60/m,typing=40/m,email_lookup=120/h,new_chat=30/m,new_group=20/h
CHAT_RATE_LIMITS = env.dict("CHAT_RATE_LIMITS", default={})
# How long people may edit their own messages (seconds; 0: always), and the reaction emoji.
CHAT_EDIT_WINDOW_SECONDS = env.int("CHAT_EDIT_WINDOW_SECONDS", default=900)
CHAT_REACTIONS = env.list("CHAT_REACTIONS", default=["👍", "❤️", "😂", "😮", "😢", "🎉"])
