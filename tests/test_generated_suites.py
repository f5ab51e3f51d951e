"""Baked projects install, pass their own test suite on real services, and deploy-check clean.

Each combination gets the shared venv for its dependency set (see project_venvs.py) and
runs from the baked directory; the project itself is not pip-installed.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from baking import clean_env, pytest_failures, tail
from project_venvs import venv_for

SUITES = {
    "default": {},
    "redis-postgresql-custom-user": {"channel_layer": "redis", "database": "postgresql", "use_custom_user_model": True},
    "auth-user-no-widget": {"use_custom_user_model": False, "use_chat_widget": False},
}

pytestmark = pytest.mark.slow


class BakedProject:
    def __init__(self, path: Path, venv: Path, services: dict[str, str]):
        self.path, self.venv, self.services = path, venv, services

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 600, **env: str):
        """Run the venv's python in the project; service URLs come from the test run."""
        environment = clean_env(PATH=f"{self.venv / 'bin'}:{clean_env()['PATH']}", VIRTUAL_ENV=str(self.venv))
        environment.update(self.services)
        environment.update(env)
        return subprocess.run(
            [str(self.venv / "bin" / "python"), *args],
            cwd=cwd or self.path,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
            check=False,
        )


@pytest.fixture(scope="module", params=list(SUITES.values()), ids=list(SUITES))
def project(request, cookies_session) -> BakedProject:
    answers = request.param
    services = {}
    if answers.get("channel_layer") == "redis":
        services["REDIS_URL"] = request.getfixturevalue("redis_url")
    if answers.get("database") == "postgresql":
        services["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    result = cookies_session.bake(extra_context={"setup_environment": False, **answers})
    assert result.exit_code == 0, result.exception
    path = Path(result.project_path)
    return BakedProject(path, venv_for(path), services)


def test_generated_test_suite_passes(project):
    # As the project's `make test` runs it: on xdist's workers, one per core.
    result = project.run("-m", "pytest", "-n", "auto", "-q", "-rfE", "-p", "no:cacheprovider")
    output = result.stdout + result.stderr
    assert result.returncode == 0, pytest_failures(output)
    assert " passed" in output


def production_env(tmp_path: Path) -> dict[str, str]:
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "chat.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'production.sqlite3'}",
    }


def test_check_deploy_is_clean_with_production_variables(project, tmp_path):
    env = production_env(tmp_path)
    if "DATABASE_URL" in project.services:
        env.pop("DATABASE_URL")  # the real PostgreSQL URL from the services
    result = project.run("manage.py", "check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, tail(result.stdout + result.stderr)
    assert "System check identified no issues" in result.stdout


def test_refuses_to_start_without_secret_key_when_debug_is_off(project, tmp_path):
    copy = tmp_path / "no-env"
    shutil.copytree(project.path, copy, ignore=shutil.ignore_patterns(".env", "*.sqlite3*"))
    result = project.run("manage.py", "check", cwd=copy, DEBUG="false")
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr


def test_migrations_match_the_models(project):
    """The shipped migrations (chat's and, with the option, users') cover every model change."""
    result = project.run("manage.py", "makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, tail(result.stdout + result.stderr)
