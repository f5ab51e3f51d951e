"""Finish the generated project: prune disabled options, write .env, optionally set up.

Generation itself never touches the network. The optional setup (venv, install, migrate,
seed) reports a failed step with the exact commands to run by hand and still exits 0, so
the generated files are always kept.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path


def as_bool(value: object) -> bool:
    return str(value).strip().lower() in {"true", "yes", "y", "1", "on"}


def paths_to_prune(answers: dict) -> list[str]:
    """Files and folders that the chosen options do not need."""
    paths = []
    if not as_bool(answers["use_custom_user_model"]):
        paths.append("users")
    if not as_bool(answers["use_chat_widget"]):
        paths.append("templates/includes/chat_widget_fab.html")
    if not as_bool(answers["use_pre_commit"]):
        paths.append(".pre-commit-config.yaml")
    if answers["open_source_license"] == "Not open source":
        paths.append("LICENSE")
    return paths


def prune(project_dir: Path, paths: list[str]) -> None:
    for relative in paths:
        target = project_dir / relative
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def env_file_text(answers: dict, secret_key: str) -> str:
    """The developer's local .env: DEBUG on, a fresh secret, local services."""
    slug = answers["project_slug"]
    lines = [
        "# Local development settings; never commit this file (it is git-ignored).",
        "DEBUG=true",
        f"SECRET_KEY={secret_key}",
        "ALLOWED_HOSTS=localhost,127.0.0.1,[::1]",
        "CSRF_TRUSTED_ORIGINS=http://localhost:8000,http://127.0.0.1:8000",
    ]
    if answers["database"] == "postgresql":
        lines.append(f"DATABASE_URL=postgres://localhost:5432/{slug}")
    else:
        lines.append("DATABASE_URL=sqlite:///db.sqlite3")
    if answers["channel_layer"] == "redis":
        lines.append("REDIS_URL=redis://127.0.0.1:6379/0")
    return "\n".join(lines) + "\n"


def write_env_file(project_dir: Path, answers: dict) -> None:
    secret_key = secrets.token_urlsafe(50)
    (project_dir / ".env").write_text(env_file_text(answers, secret_key))


def setup_steps(answers: dict) -> list[list[str]]:
    """Commands run inside the project directory; `python` means the venv's interpreter."""
    steps = [
        ["python", "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        ["python", "-m", "pip", "install", "--quiet", "-e", ".[dev]"],
        ["python", "manage.py", "migrate", "--no-input"],
    ]
    if as_bool(answers["seed_demo_data"]):
        steps.append(["python", "manage.py", "seed_chat_data"])
    return steps


def venv_python(project_dir: Path) -> Path:
    scripts = "Scripts" if sys.platform == "win32" else "bin"
    return project_dir / ".venv" / scripts / ("python.exe" if sys.platform == "win32" else "python")


def shell_line(step: list[str]) -> str:
    return " ".join(".venv/bin/python" if part == "python" else part for part in step)


def run_setup(project_dir: Path, answers: dict) -> tuple[bool, str]:
    """Create .venv with the interpreter running cookiecutter, then install and migrate.

    Returns whether every step passed and what the last step printed (the demo logins
    when seeding), so they can be shown again after the next steps.
    """
    steps = setup_steps(answers)
    manual = [f"{sys.executable} -m venv .venv"] + [shell_line(step) for step in steps]
    last_output = ""
    try:
        subprocess.run([sys.executable, "-m", "venv", ".venv"], cwd=project_dir, check=True)
        python = str(venv_python(project_dir))
        for step in steps:
            print(f"==> {shell_line(step)}", flush=True)
            command = [python if part == "python" else part for part in step]
            result = subprocess.run(command, cwd=project_dir, check=True, stdout=subprocess.PIPE, text=True)
            last_output = result.stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"\nWARNING: setup step failed ({error}). The project files are kept.", file=sys.stderr)
        print("Finish the setup by hand, inside the project directory:", file=sys.stderr)
        for line in manual:
            print(f"    {line}", file=sys.stderr)
        return False, ""
    return True, last_output


def next_steps(answers: dict, *, set_up: bool) -> str:
    slug = answers["project_slug"]
    lines = ["", f"Your project is ready in ./{slug}", "", f"    cd {slug}"]
    if not set_up:
        lines.append("    make setup        # venv, install, migrate")
        if as_bool(answers["seed_demo_data"]):
            lines.append("    make seed         # demo users and chats")
    if answers["database"] == "postgresql":
        lines.append(f"    # PostgreSQL must be running with a database named '{slug}' (see .env)")
    if answers["channel_layer"] == "redis":
        lines.append("    # Redis must be running on REDIS_URL (see .env)")
    lines += ["    make run          # http://127.0.0.1:8000/", "    make test", ""]
    return "\n".join(lines)


def main(answers: dict) -> int:
    project_dir = Path.cwd()
    prune(project_dir, paths_to_prune(answers))
    write_env_file(project_dir, answers)
    set_up, setup_output = False, ""
    if as_bool(answers["setup_environment"]):
        set_up, setup_output = run_setup(project_dir, answers)
    print(next_steps(answers, set_up=set_up))
    if set_up and as_bool(answers["seed_demo_data"]):
        print(setup_output)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r"""{{ cookiecutter | jsonify }}""")))
