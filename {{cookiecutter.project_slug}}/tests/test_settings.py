"""Settings are safe by default and production-ready with production variables."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

PROJECT_DIR = Path(__file__).resolve().parent.parent


def run_manage(*args, **env_overrides):
    env = {key: value for key, value in os.environ.items() if key not in {"SECRET_KEY", "DEBUG"}}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "false", **env_overrides})
    # Variables set here win over the project's .env (it never overwrites the environment).
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120
    )


def test_refuses_to_start_without_secret_key_when_debug_is_off():
    result = run_manage("check", SECRET_KEY="")
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr


def test_deploy_check_is_clean_with_production_variables():
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="chat.example.com",
        CSRF_TRUSTED_ORIGINS="https://chat.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_server_log_lines_print_once_with_debug_on():
    log_one_line = "import logging; logging.getLogger('django.channels.server').info('one request line')"
    result = run_manage(
        "shell",
        "--verbosity",
        "0",
        "-c",
        log_one_line,
        DEBUG="true",
        SECRET_KEY=secrets.token_urlsafe(50),
        LOG_LEVEL="INFO",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("one request line") == 1, result.stderr


def production_settings(*names: str, **env_overrides: str) -> dict:
    """These settings as the project reads them with production variables (and these overrides)."""
    code = "import json; from django.conf import settings as s; print(json.dumps(dict((n, getattr(s, n)) for n in %r)))"
    code %= (names,)
    env = {"SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "chat.example.com", **env_overrides}
    result = run_manage("shell", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_hsts_covers_subdomains_and_asks_for_preload_only_when_the_deployer_opts_in():
    names = ("SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD")
    assert production_settings(*names) == {names[0]: 31536000, names[1]: False, names[2]: False}
    opted_in = production_settings(*names, SECURE_HSTS_INCLUDE_SUBDOMAINS="true", SECURE_HSTS_PRELOAD="true")
    assert opted_in == {names[0]: 31536000, names[1]: True, names[2]: True}


@pytest.mark.parametrize("value", ["staff-4f9c/", "staff-4f9c", "/staff-4f9c/"])
def test_admin_url_comes_from_the_environment(value):
    code = "from django.urls import reverse; print(reverse('admin:login'))"
    env = {"SECRET_KEY": secrets.token_urlsafe(50), "ADMIN_URL": value}
    result = run_manage("shell", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "/staff-4f9c/login/"


def test_an_empty_admin_url_is_refused_rather_than_mounting_the_admin_at_the_root():
    env = {"SECRET_KEY": secrets.token_urlsafe(50), "ADMIN_URL": "/"}
    result = run_manage("check", **env)
    assert result.returncode != 0
    assert "ADMIN_URL must name a path" in result.stderr


@pytest.mark.django_db
def test_pages_carry_a_content_security_policy_without_inline_code_and_a_permissions_policy(client):
    response = client.get(reverse("login"))
    policy = dict(
        directive.strip().split(" ", 1) for directive in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert "camera=()" in response.headers["Permissions-Policy"]
    assert "microphone=()" in response.headers["Permissions-Policy"]
