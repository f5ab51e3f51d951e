"""Check the answers inside cookiecutter, before it writes anything.

cookiecutter.json loads this module as a Jinja extension (`_extensions`) and renders its last
variable, `__answers_checked`, through the `check_answers` filter: by then every answer is
known, whether typed at the prompts or given on the command line, and no directory exists yet.
A bad answer prints one line, `ERROR: <what is wrong>. <how to fix it>`, on stderr and exits 1.

The checks run here rather than in a pre_gen_project hook because cookiecutter follows a
failed hook with its own "Stopping generation" message and a traceback. The choice and yes/no
options are plain strings in cookiecutter.json for the same reason: cookiecutter rejects a value
outside a choice list, or a yes/no it cannot read, with a traceback before any template code
runs. Here they get the same one-line error, and the yes/no answers become the booleans the
templates and hooks test.

Each check is a small function returning an error line or None, which the template's tests
import and exercise directly.
"""

from __future__ import annotations

import keyword
import re
import sys
import zoneinfo
from typing import NoReturn

from jinja2 import Environment
from jinja2.ext import Extension

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
EMAIL_PATTERN = re.compile(r'^[^@\s"\\<>]+@[^@\s"\\<>]+\.[^@\s"\\<>]+$')
DOMAIN_PATTERN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
VERSION_PATTERN = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")


def quoted(value: object) -> str:
    """The answer in quotes, control characters escaped, so the error stays on one line."""
    return "'" + CONTROL_CHARACTERS.sub(lambda found: repr(found.group())[1:-1], str(value)) + "'"


def check_slug(slug: str) -> str | None:
    if not SLUG_PATTERN.match(slug) or keyword.iskeyword(slug):
        return (
            f"ERROR: project_slug {quoted(slug)} is not a valid Python package name. "
            "Use lowercase letters, digits and underscores, starting with a letter (e.g. my_chat)."
        )
    if slug in PROJECT_MODULES:
        return (
            f"ERROR: project_slug {quoted(slug)} would shadow the '{slug}' module the project imports. "
            f"Pick another name (e.g. my_{slug})."
        )
    if slug in sys.stdlib_module_names:
        return (
            f"ERROR: project_slug {quoted(slug)} would shadow the standard library's '{slug}' module. "
            f"Pick another name (e.g. my_{slug})."
        )
    return None


def check_email(email: str) -> str | None:
    if not EMAIL_PATTERN.match(email):
        return f"ERROR: author_email {quoted(email)} is not an e-mail address. Use the form name@example.com."
    return None


def check_timezone(name: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"ERROR: timezone {quoted(name)} is not a known IANA time zone. Use a name such as UTC or Europe/Paris."
    return None


def check_domain(domain: str) -> str | None:
    if not DOMAIN_PATTERN.match(domain.lower()):
        return (
            f"ERROR: domain_name {quoted(domain)} is not a host name. "
            "Use a bare host such as example.com (no scheme or path)."
        )
    return None


def check_version(version: str) -> str | None:
    if not VERSION_PATTERN.match(version):
        return f"ERROR: version {quoted(version)} is not a PEP 440 version. Use a version such as 0.1.0."
    return None


# Free text lands in pyproject.toml strings, a Python docstring and HTML templates.
UNSAFE_TEXT = re.compile(r'["\\<>{}]|[\x00-\x1f\x7f]')

CHOICES = {
    "channel_layer": ("in-memory", "redis"),
    "database": ("sqlite", "postgresql"),
    "open_source_license": ("MIT", "BSD-3-Clause", "Apache-2.0", "Not open source"),
}
# What cookiecutter itself accepts for a yes/no question.
YES = frozenset({"1", "true", "t", "yes", "y", "on"})
NO = frozenset({"0", "false", "f", "no", "n", "off"})
YES_NO_OPTIONS = ("use_custom_user_model", "use_chat_widget", "seed_demo_data", "setup_environment", "use_pre_commit")


def check_project_name(name: str) -> str | None:
    if not name.strip():
        return 'ERROR: project_name is empty. Give the project a name (e.g. project_name="Team Chat").'
    return check_plain_text("project_name", name)


def check_plain_text(option: str, text: str) -> str | None:
    unsafe = UNSAFE_TEXT.search(text)
    if unsafe:
        return (
            f"ERROR: {option} {quoted(text)} contains {quoted(unsafe.group())}. "
            'Use plain text on one line, without quotes ("), backslashes, braces or angle brackets.'
        )
    return None


def check_choice(option: str, value: str) -> str | None:
    choices = CHOICES[option]
    if value not in choices:
        listed = ", ".join(choices)
        return f"ERROR: {option} {quoted(value)} is not one of {listed}. Use one of them (e.g. {option}={choices[0]})."
    return None


def as_bool(value: object) -> bool | None:
    """cookiecutter's reading of a yes/no answer; None when it is neither."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in YES else False if text in NO else None


def check_yes_no(option: str, value: object) -> str | None:
    if as_bool(value) is None:
        return f"ERROR: {option} {quoted(value)} is not yes or no. Use yes or no (or true/false, y/n, 1/0, on/off)."
    return None


def first_error(answers: dict) -> str | None:
    """The first bad answer, in the order cookiecutter asks them."""
    checks = [
        check_project_name(str(answers["project_name"])),
        check_slug(str(answers["project_slug"])),
        check_plain_text("description", str(answers["description"])),
        check_plain_text("author_name", str(answers["author_name"])),
        check_email(str(answers["author_email"])),
        check_domain(str(answers["domain_name"])),
        check_timezone(str(answers["timezone"])),
        check_version(str(answers["version"])),
        check_choice("channel_layer", answers["channel_layer"]),
        check_choice("database", answers["database"]),
        *(check_yes_no(option, answers[option]) for option in YES_NO_OPTIONS),
        check_choice("open_source_license", answers["open_source_license"]),
    ]
    return next((error for error in checks if error), None)


def stop(error: str) -> NoReturn:
    print(error, file=sys.stderr)
    raise SystemExit(1)


def check_answers(answers: dict) -> str:
    """Stop on the first bad answer; otherwise turn the yes/no answers into booleans.

    `answers` is the dictionary cookiecutter is filling in, so the booleans are what the
    templates and hooks see.
    """
    error = first_error(answers)
    if error:
        stop(error)
    for option in YES_NO_OPTIONS:
        answers[option] = as_bool(answers[option])
    return "yes"


class AnswerChecks(Extension):
    """Adds the `check_answers` filter that cookiecutter.json's `__answers_checked` uses."""

    def __init__(self, environment: Environment):
        super().__init__(environment)
        environment.filters["check_answers"] = check_answers
