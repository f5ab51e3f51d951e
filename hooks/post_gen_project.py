"""Finish the generated project: prune disabled options, write .env, optionally set up.

Generation itself never touches the network. The optional setup (venv, install, migrate,
seed) reports a failed step in one line, removes what that part of the setup had made (a
half-built .venv, the egg-info and build folders of a failed install, a half-migrated
database) and still exits 0, so the generated files are always kept. The next steps then say
what is left to do, services first, in the order it has to be done.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path


def as_bool(value: object) -> bool:
    return str(value).strip().lower() in {"true", "t", "yes", "y", "1", "on"}


# The Redis connection settings (REDIS_URL or Sentinel) and their tests.
REDIS_ONLY_PATHS = [
    "config/redis_layer.py",
    "config/redis_servers.py",
    "tests/test_redis_layer.py",
    "tests/test_redis_servers.py",
]


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
    if answers["channel_layer"] != "redis":
        paths += REDIS_ONLY_PATHS
    if answers["database"] != "postgresql":
        paths += ["config/postgresql", "tests/test_postgresql_pool.py"]
    return paths


def prune(project_dir: Path, paths: list[str]) -> None:
    for relative in paths:
        target = project_dir / relative
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def env_file_text(answers: dict, *, secret_key: str, database_password: str) -> str:
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
        lines += [
            f"# A role '{slug}' (with CREATEDB, for the test database) that owns a database '{slug}';",
            "# the README's first commands create both. Or point it at a role and database you have.",
            f"DATABASE_URL=postgres://{slug}:{database_password}@127.0.0.1:5432/{slug}",
        ]
    else:
        lines.append("DATABASE_URL=sqlite:///db.sqlite3")
    if answers["channel_layer"] == "redis":
        lines.append("REDIS_URL=redis://127.0.0.1:6379/0")
    return "\n".join(lines) + "\n"


def write_env_file(project_dir: Path, answers: dict) -> None:
    text = env_file_text(answers, secret_key=secrets.token_urlsafe(50), database_password=secrets.token_urlsafe(18))
    (project_dir / ".env").write_text(text)


def setup_phases(answers: dict) -> list[list[list[str]]]:
    """The setup's commands, run inside the project; `python` means the venv's interpreter.

    A phase is undone as a whole when one of its commands fails: install (venv and pip),
    migrate, seed.
    """
    phases = [
        [
            ["venv"],
            ["python", "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
            ["python", "-m", "pip", "install", "--quiet", "-e", ".[dev]"],
        ],
        [["python", "manage.py", "migrate", "--no-input"]],
    ]
    if as_bool(answers["seed_demo_data"]):
        phases.append([["python", "manage.py", "seed_chat_data"]])
    return phases


def venv_python(project_dir: Path) -> Path:
    scripts = "Scripts" if sys.platform == "win32" else "bin"
    return project_dir / ".venv" / scripts / ("python.exe" if sys.platform == "win32" else "python")


def shell_line(step: list[str]) -> str:
    """The command as a user would type it in the project directory (quoted for zsh too)."""
    if step == ["venv"]:
        return f"{sys.executable} -m venv .venv"
    return " ".join(".venv/bin/python" if part == "python" else f"'{part}'" if "[" in part else part for part in step)


def command(step: list[str], project_dir: Path) -> list[str]:
    if step == ["venv"]:
        return [sys.executable, "-m", "venv", ".venv"]
    return [str(venv_python(project_dir)) if part == "python" else part for part in step]


def remove_new_entries(project_dir: Path, before: set[str]) -> list[str]:
    """Remove what appeared in the project folder since `before`; return the names removed."""
    removed = sorted(set(os.listdir(project_dir)) - before)
    for name in removed:
        path = project_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return removed


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def run_setup(project_dir: Path, answers: dict) -> tuple[bool, str]:
    """Create .venv with the interpreter running cookiecutter, then install, migrate and seed.

    Returns whether every step passed and what the last step printed (the demo logins
    when seeding), so they can be shown after the next steps.
    """
    output = ""
    for phase in setup_phases(answers):
        before = set(os.listdir(project_dir))
        for step in phase:
            print(f"==> {shell_line(step)}", flush=True)
            try:
                result = subprocess.run(
                    command(step, project_dir), cwd=project_dir, capture_output=True, text=True, check=False
                )
            except OSError as error:
                result = subprocess.CompletedProcess(step, 1, "", str(error))
            if result.returncode != 0:
                removed = remove_new_entries(project_dir, before)
                report_failure(step, last_line(result.stderr or result.stdout), removed)
                return False, ""
            output = result.stdout
    return True, output


def report_failure(step: list[str], reason: str, removed: list[str]) -> None:
    print(f"\nWARNING: setup stopped: `{shell_line(step)}` failed: {reason}", file=sys.stderr)
    if removed:
        print(f"Removed what the setup had made ({', '.join(removed)}); the generated files are kept.", file=sys.stderr)
    print("Run the step by hand for its whole output; the steps left are below.", file=sys.stderr, flush=True)


def display_path(project_dir: Path) -> str:
    """The project as seen from the directory cookiecutter was started in (the shell's PWD)."""
    start = os.environ.get("PWD", "")
    if os.path.isabs(start):
        relative = os.path.relpath(project_dir.resolve(), Path(start).resolve())
        if not relative.startswith(".."):
            return relative
    return str(project_dir)


def service_lines(answers: dict, *, set_up: bool) -> list[str]:
    """What must be running before the make targets that need it, with how to create it."""
    slug = answers["project_slug"]
    lines = []
    if answers["database"] == "postgresql" and set_up:
        lines.append("# PostgreSQL must be running (DATABASE_URL in .env)")
    elif answers["database"] == "postgresql":
        lines += [
            "# PostgreSQL must be running, with the role and database DATABASE_URL in .env names;",
            "# as a PostgreSQL superuser (on Debian/Ubuntu: prefix `sudo -u postgres`):",
            f"createuser --createdb --pwprompt {slug}   # the password from DATABASE_URL in .env",
            f"createdb --owner {slug} {slug}",
        ]
    if answers["channel_layer"] == "redis":
        lines.append("# Redis must be running on REDIS_URL in .env (e.g. redis-server)")
    return lines


def next_steps(answers: dict, *, project: str, set_up: bool) -> str:
    """What to do next, in order: services, then the make targets left."""
    if set_up:
        done = "demo data seeded" if as_bool(answers["seed_demo_data"]) else "database migrated"
        header = f"Your project is ready in {project} (.venv installed, {done})."
    else:
        header = f"Your project is ready in {project}."
    commands = [f"cd {project}", *service_lines(answers, set_up=set_up)]
    if not set_up:
        commands.append("make setup        # .venv, install, migrate")
        if as_bool(answers["seed_demo_data"]):
            commands.append("make seed         # demo users and chats; prints the logins")
    commands += ["make run          # http://127.0.0.1:8000/", "make test"]
    return "\n".join(["", header, "", *(f"    {line}" for line in commands), ""])


def main(answers: dict) -> int:
    project_dir = Path.cwd()
    prune(project_dir, paths_to_prune(answers))
    write_env_file(project_dir, answers)
    set_up, setup_output = False, ""
    if as_bool(answers["setup_environment"]):
        set_up, setup_output = run_setup(project_dir, answers)
    print(next_steps(answers, project=display_path(project_dir), set_up=set_up))
    if set_up and as_bool(answers["seed_demo_data"]):
        print(setup_output)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r"""{{ cookiecutter | jsonify }}""")))
