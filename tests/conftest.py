"""Fixtures for the template's own suite: the hook modules, baking, live services.

Services (Redis, PostgreSQL) come from REDIS_URL and TEST_DATABASE_URL / DATABASE_URL,
which `.ci/run` exports. Outside CI a test whose service is unreachable is skipped with
the reason; with CI=true it fails, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import socket
from types import ModuleType
from typing import NoReturn
from urllib.parse import urlsplit

import pytest
from baking import TEMPLATE_DIR, load_hook, load_module

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def pytest_configure(config: pytest.Config) -> None:
    # pytest-cookies bakes `--template`, "." by default: make that this repository
    # wherever pytest is started from.
    if config.option.template == ".":
        config.option.template = str(TEMPLATE_DIR)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the slow tests first, so xdist overlaps them with the many quick ones."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def answer_checks() -> ModuleType:
    return load_module(TEMPLATE_DIR / "local_extensions.py")


@pytest.fixture(scope="session")
def post_gen() -> ModuleType:
    return load_hook("post_gen_project")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def is_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=2):
            return True
    except OSError:
        return False


def unavailable(reason: str, ci_hint: str = "") -> NoReturn:
    """Skip a test whose tool or service is missing here; fail it with CI=true, where .ci/run provides it."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}{ci_hint}", pytrace=False)
    pytest.skip(reason)


def require_service(url: str | None, reason: str) -> str:
    """Return the URL if its server answers; otherwise skip (locally) or fail (in CI)."""
    if url and is_reachable(url):
        return url
    unavailable(reason, "; .ci/run must start it")


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    return require_service(url, f"Redis is not reachable at {url} (start it or set REDIS_URL)")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url and not url.startswith(("postgres://", "postgresql://")):
        url = None
    if url:
        return require_service(url, f"PostgreSQL is not reachable at {url}")
    return require_service(
        None, "no PostgreSQL URL: set TEST_DATABASE_URL (a role with CREATEDB), e.g. postgres://u:p@127.0.0.1:5432/db"
    )
