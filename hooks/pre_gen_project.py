"""Validate the answers before cookiecutter writes anything.

Each check is a small function returning an error line or None, so the template's
tests import and exercise them directly. On the first error the hook prints one line,
``ERROR: <what is wrong>. <how to fix it>``, and exits 1; cookiecutter then removes the
half-made project directory.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
import zoneinfo

# Names the generated project imports or creates; a slug equal to one of them would
# shadow it on sys.path (the project directory is the working directory).
PROJECT_MODULES = frozenset(
    {
        "accounts",
        "asgiref",
        "channels",
        "channels_redis",
        "chat",
        "config",
        "conftest",
        "daphne",
        "django",
        "django_htmx",
        "environ",
        "manage",
        "psycopg",
        "pytest",
        "redis",
        "static",
        "templates",
        "test",
        "tests",
        "users",
        "whitenoise",
    }
)
SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DOMAIN_PATTERN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
VERSION_PATTERN = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")


def check_slug(slug: str) -> str | None:
    if not SLUG_PATTERN.match(slug) or keyword.iskeyword(slug):
        return (
            f"ERROR: project_slug '{slug}' is not a valid Python package name. "
            "Use lowercase letters, digits and underscores, starting with a letter (e.g. my_chat)."
        )
    if slug in PROJECT_MODULES:
        return (
            f"ERROR: project_slug '{slug}' would shadow the '{slug}' module the project imports. "
            f"Pick another name (e.g. my_{slug})."
        )
    if slug in sys.stdlib_module_names:
        return (
            f"ERROR: project_slug '{slug}' would shadow the standard library's '{slug}' module. "
            f"Pick another name (e.g. my_{slug})."
        )
    return None


def check_email(email: str) -> str | None:
    if not EMAIL_PATTERN.match(email):
        return f"ERROR: author_email '{email}' is not an e-mail address. Use the form name@example.com."
    return None


def check_timezone(name: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"ERROR: timezone '{name}' is not a known IANA time zone. Use a name such as UTC or Europe/Paris."
    return None


def check_domain(domain: str) -> str | None:
    if not DOMAIN_PATTERN.match(domain.lower()):
        return (
            f"ERROR: domain_name '{domain}' is not a host name. "
            "Use a bare host such as example.com (no scheme or path)."
        )
    return None


def check_version(version: str) -> str | None:
    if not VERSION_PATTERN.match(version):
        return f"ERROR: version '{version}' is not a PEP 440 version. Use a version such as 0.1.0."
    return None


def first_error(answers: dict[str, str]) -> str | None:
    checks = (
        check_slug(answers["project_slug"]),
        check_email(answers["author_email"]),
        check_timezone(answers["timezone"]),
        check_domain(answers["domain_name"]),
        check_version(answers["version"]),
    )
    return next((error for error in checks if error), None)


def main() -> int:
    answers = json.loads(r"""{{ cookiecutter | jsonify }}""")
    error = first_error(answers)
    if error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
