"""Baked projects for the benchmarks: bake, shared venv, migrate, seed, and server processes.

Bakes go to build/bench/ with setup_environment=false and run from the template suite's
shared venvs (tests/project_venvs.py), so a second run installs nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = BENCH_DIR.parent
sys.path.insert(0, str(TEMPLATE_DIR / "tests"))

from baking import clean_env, run_cookiecutter, served_env, tail  # noqa: E402, F401 - run.py takes clean_env from here
from project_venvs import requirements, venv_for  # noqa: E402, F401 - run.py takes requirements from here
from services import tooling  # noqa: E402

BUILD_DIR = TEMPLATE_DIR / "build" / "bench"
BENCHMARK_USER = "alice"


class Project:
    """One bake, run with its shared venv and an environment of its own (database, Redis)."""

    def __init__(self, name: str, answers: dict[str, str], *, database_url: str, redis_url: str | None):
        self.name = name
        output = BUILD_DIR / name
        shutil.rmtree(output, ignore_errors=True)
        started = time.perf_counter()
        context = [f"{key}={value}" for key, value in {"setup_environment": "false", **answers}.items()]
        result = run_cookiecutter(*context, output_dir=output)
        if result.returncode != 0:
            raise RuntimeError(f"bake {name} failed:\n{tail(result.stdout + result.stderr)}")
        self.bake_seconds = time.perf_counter() - started
        self.path = output / "chat_project"
        self.venv = venv_for(self.path)
        self.python = str(self.venv / "bin" / "python")
        self.env = served_env(
            DATABASE_URL=database_url,
            SECURE_HSTS_SECONDS="0",
            PYTHONDONTWRITEBYTECODE="1",
        )
        if redis_url:
            self.env["REDIS_URL"] = redis_url

    def run(self, *args: str, timeout: float = 600, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            [self.python, *args],
            cwd=self.path,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(args[:3])} failed:\n{tail(result.stdout + result.stderr)}")
        return result.stdout

    def run_json(self, *args: str, timeout: float = 600) -> dict:
        """Run a script whose last line of output is JSON."""
        return json.loads(self.run(*args, timeout=timeout).strip().splitlines()[-1])

    def prepare(self, *, users: int, chats: int, messages: int) -> float:
        """Migrate, collect static files (DEBUG off serves hashed names) and seed; returns the seed time."""
        self.run("manage.py", "migrate", "--no-input")
        self.run("manage.py", "collectstatic", "--no-input")
        started = time.perf_counter()
        self.run(
            "manage.py",
            "seed_chat_data",
            "--users",
            str(users),
            "--chats",
            str(chats),
            "--messages",
            str(messages),
            "--benchmark-user",
            BENCHMARK_USER,
            "--force",
            "--quiet",
        )
        return time.perf_counter() - started


def start_server(project: Project, log_path: Path, *, server: str, application: str = "config.asgi:application"):
    """One app server process (tooling.ServerProcess: gunicorn or daphne) on a free port of 127.0.0.1, listening."""
    process = tooling.ServerProcess(
        log_path=log_path,
        env=project.env,
        application=application,
        project_dir=project.path,
        python=project.python,
        server=server,
    )
    process.wait_ready()
    return process
