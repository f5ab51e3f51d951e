"""Every option combination bakes into a clean, pruned, lint-clean project."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

MATRIX = [
    {"channel_layer": layer, "database": database, "use_custom_user_model": custom_user, "use_chat_widget": widget}
    for layer, database, custom_user, widget in itertools.product(
        ["in-memory", "redis"], ["sqlite", "postgresql"], [True, False], [True, False]
    )
]


def combination_id(answers: dict) -> str:
    return "-".join(
        [
            answers["channel_layer"],
            answers["database"],
            "custom-user" if answers["use_custom_user_model"] else "auth-user",
            "widget" if answers["use_chat_widget"] else "no-widget",
        ]
    )


def bake(cookies, **answers) -> Path:
    result = cookies.bake(extra_context={"setup_environment": False, **answers})
    assert result.exit_code == 0, result.exception
    return Path(result.project_path)


@pytest.fixture(scope="module", params=MATRIX, ids=combination_id)
def baked(request, cookies_session) -> tuple[dict, Path]:
    return request.param, bake(cookies_session, **request.param)


# Tool caches a local run may leave in the template folder; a fresh clone has none.
CACHE_DIRS = {".ruff_cache", "__pycache__", ".pytest_cache"}


def project_files(project: Path) -> list[Path]:
    return [path for path in project.rglob("*") if path.is_file() and not CACHE_DIRS & set(path.parts)]


def is_django_template(path: Path) -> bool:
    return path.suffix in {".html", ".txt"} and "templates" in path.parts


# Jinja that Django's template language does not have: whitespace control and raw blocks.
JINJA_ONLY = re.compile(r"\{%-|-%\}|\{%\s*(raw|endraw)\s*%\}")
# A cookiecutter variable that was not rendered.
COOKIECUTTER_VARIABLE = re.compile(r"\{\{-?\s*cookiecutter|cookiecutter\.[a-z_]")


# Markdown may show Django template code in fenced blocks; only the prose must be plain.
FENCED_BLOCK = re.compile(r"^[ \t]*```.*?^[ \t]*```", re.MULTILINE | re.DOTALL)


def keeps_markup(path: Path) -> bool:
    text = path.read_text(errors="replace")
    if COOKIECUTTER_VARIABLE.search(text) or JINJA_ONLY.search(text):
        return True
    if is_django_template(path):
        return False
    if path.suffix == ".md":
        text = FENCED_BLOCK.sub("", text)
    return "{%" in text  # not "%}": Python's f"{ratio:.0%}" ends that way


def test_no_file_keeps_cookiecutter_markup(baked):
    _, project = baked
    assert [str(path.relative_to(project)) for path in project_files(project) if keeps_markup(path)] == []


def test_no_directory_or_file_name_keeps_markup(baked):
    _, project = baked
    assert [str(p) for p in project_files(project) if "{" in str(p) or "}" in str(p)] == []


def dependencies(project: Path) -> str:
    return "\n".join(tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"])


def test_custom_user_model_option_adds_or_prunes_users_app(baked):
    answers, project = baked
    settings = (project / "config" / "settings.py").read_text()
    if answers["use_custom_user_model"]:
        assert (project / "users" / "models.py").is_file()
        assert (project / "users" / "migrations" / "0001_initial.py").is_file()
        assert 'AUTH_USER_MODEL = "users.User"' in settings
    else:
        assert not (project / "users").exists()
        assert "AUTH_USER_MODEL" not in settings
        assert '"users"' not in settings
        pyproject = tomllib.loads((project / "pyproject.toml").read_text())
        assert "users" not in pyproject["tool"]["pytest"]["ini_options"]["testpaths"]
        assert "users*" not in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]


def test_widget_option_adds_or_prunes_widget_include(baked):
    answers, project = baked
    fab = project / "templates" / "includes" / "chat_widget_fab.html"
    base = (project / "templates" / "base.html").read_text()
    assert fab.is_file() == answers["use_chat_widget"]
    assert ("includes/chat_widget_fab.html" in base) == answers["use_chat_widget"]


def test_channel_layer_option_selects_backend_and_dependency(baked):
    answers, project = baked
    settings = (project / "config" / "settings.py").read_text()
    env_files = (project / ".env").read_text() + (project / ".env.example").read_text()
    layer = project / "config" / "redis_layer.py"
    if answers["channel_layer"] == "redis":
        assert '"BACKEND": "config.redis_layer.ReconnectingRedisChannelLayer"' in settings
        assert "class ReconnectingRedisChannelLayer(RedisChannelLayer):" in layer.read_text()
        assert "channels-redis" in dependencies(project)
        assert "REDIS_URL=" in env_files
    else:
        assert "channels.layers.InMemoryChannelLayer" in settings
        assert "RedisChannelLayer" not in settings
        assert not layer.exists()
        assert "REDIS_URL" not in settings
        assert "channels-redis" not in dependencies(project)
        assert "REDIS_URL" not in env_files


def test_database_option_selects_driver_and_url(baked):
    answers, project = baked
    env = (project / ".env").read_text()
    if answers["database"] == "postgresql":
        assert "psycopg[binary,pool]" in dependencies(project)  # the pool: settings' OPTIONS["pool"]
        assert "DATABASE_URL=postgres://" in env
    else:
        assert "psycopg" not in dependencies(project)
        assert "DATABASE_URL=sqlite:///" in env


def first_commands(project: Path) -> list[str]:
    """The README's first code block, line by line."""
    readme = (project / "README.md").read_text()
    return readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()


def test_readme_first_commands_start_the_services_before_setup(baked):
    answers, project = baked
    lines = first_commands(project)
    setup = next(i for i, line in enumerate(lines) if line.startswith("make setup"))
    assert [line.split()[1] for line in lines[setup:]] == ["setup", "seed", "run"]
    before = "\n".join(lines[:setup])
    slug = project.name
    if answers["database"] == "postgresql":
        assert f"createuser --createdb --pwprompt {slug}" in before
        assert f"createdb --owner {slug} {slug}" in before
    if answers["channel_layer"] == "redis":
        assert "Redis must be running on REDIS_URL" in before
    if answers["database"] == "sqlite" and answers["channel_layer"] == "in-memory":
        assert setup == 0


def run_tool(project: Path, *command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=project, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"


def test_baked_project_is_lint_clean(baked):
    """ruff and djLint with the generated pyproject.toml's own configuration."""
    _, project = baked
    run_tool(project, "ruff", "check", "--no-cache", ".")
    run_tool(project, "ruff", "format", "--no-cache", "--check", ".")
    run_tool(project, "djlint", "--check", ".")


def read_secret_key(project: Path) -> str:
    (line,) = [line for line in (project / ".env").read_text().splitlines() if line.startswith("SECRET_KEY=")]
    return line.removeprefix("SECRET_KEY=")


def test_each_bake_gets_its_own_random_secret_key_only_in_env(cookies):
    first, second = bake(cookies), bake(cookies)
    keys = {read_secret_key(first), read_secret_key(second)}
    assert len(keys) == 2
    assert all(len(key) >= 50 for key in keys)
    key = read_secret_key(first)
    assert [p.name for p in project_files(first) if key in p.read_text(errors="replace")] == [".env"]
    assert ".env" in (first / ".gitignore").read_text().splitlines()


@pytest.mark.parametrize("use_pre_commit", [True, False])
def test_pre_commit_config_only_when_asked(cookies, use_pre_commit):
    project = bake(cookies, use_pre_commit=use_pre_commit)
    assert (project / ".pre-commit-config.yaml").is_file() == use_pre_commit


@pytest.mark.parametrize(
    ("license_name", "first_line"),
    [("MIT", "MIT License"), ("BSD-3-Clause", "BSD 3-Clause License"), ("Apache-2.0", "Apache License")],
)
def test_license_file_matches_choice(cookies, license_name, first_line):
    project = bake(cookies, open_source_license=license_name, author_name="Ada Lovelace")
    text = (project / "LICENSE").read_text()
    assert first_line in text
    assert "Ada Lovelace" in text
    assert f'license = "{license_name}"' in (project / "pyproject.toml").read_text()


def test_not_open_source_has_no_license(cookies):
    project = bake(cookies, open_source_license="Not open source")
    assert not (project / "LICENSE").exists()
    assert "license =" not in (project / "pyproject.toml").read_text()


def test_slug_is_derived_from_project_name(cookies):
    project = bake(cookies, project_name="My Chat-App")
    assert project.name == "my_chat_app"
    assert 'name = "my_chat_app"' in (project / "pyproject.toml").read_text()


def test_answers_reach_the_project(cookies):
    project = bake(cookies, timezone="Europe/Paris", domain_name="chat.example.org", version="1.2.3")
    assert '"Europe/Paris"' in (project / "config" / "settings.py").read_text()
    assert "ALLOWED_HOSTS=chat.example.org" in (project / ".env.example").read_text()
    assert 'version = "1.2.3"' in (project / "pyproject.toml").read_text()
