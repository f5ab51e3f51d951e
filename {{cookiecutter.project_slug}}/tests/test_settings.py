"""Settings are safe by default and production-ready with production variables."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

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
