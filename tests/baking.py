"""How the suite runs the template and what it hands to a baked project.

Kept out of conftest.py so test modules can import it by name.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
PROJECT_TEMPLATE_DIR = TEMPLATE_DIR / "{{cookiecutter.project_slug}}"

# Variables of this process that must not leak into a baked project: its settings read
# DATABASE_URL/REDIS_URL/SECRET_KEY/DEBUG from the environment before .env, and pytest's
# own variables would confuse the inner pytest run.
LEAKY_PREFIXES = ("PYTEST_", "DJANGO_", "VIRTUAL_ENV")
LEAKY_NAMES = {"DATABASE_URL", "TEST_DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without what would leak into a baked project."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in LEAKY_NAMES and not name.startswith(LEAKY_PREFIXES)
    }
    env.update(overrides)
    return env


def served_env(**overrides: str) -> dict[str, str]:
    """`clean_env` for a baked project served with production settings (DEBUG off, a fresh
    secret) over plain HTTP on 127.0.0.1, as the suite's and the benchmark's servers are."""
    return clean_env(
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        LOG_LEVEL="WARNING",
        **overrides,
    )


def run_cookiecutter(
    *args: str, output_dir: Path, timeout: float = 60, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the cookiecutter CLI on this template as a user would, isolated from ~/.cookiecutterrc.

    `cwd` is the shell's directory (its PWD too); `env` adds variables (e.g. pip's settings).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    config = output_dir.parent / f"{output_dir.name}-cookiecutterrc.yaml"
    config.write_text(
        f"cookiecutters_dir: {output_dir.parent / 'cookiecutters'}\nreplay_dir: {output_dir.parent / 'replay'}\n"
    )
    command = [sys.executable, "-m", "cookiecutter", "--no-input", "--config-file", str(config)]
    command += ["--output-dir", str(output_dir), str(TEMPLATE_DIR), *args]
    shell = {"PWD": str(cwd)} if cwd else {}
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=clean_env(**shell, **(env or {})),
        check=False,
    )


def load_hook(name: str) -> ModuleType:
    """Import hooks/<name>.py as a module; its Jinja markup sits only inside a string."""
    return load_module(TEMPLATE_DIR / "hooks" / f"{name}.py")


def load_module(path: Path) -> ModuleType:
    """Import a Python file of the template by its path, under a name of its own."""
    spec = importlib.util.spec_from_file_location(f"template_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PROJECT_BENCHMARKS = "project_benchmarks"  # the generated project's benchmarks package, imported here


@functools.cache
def load_project_module(name: str) -> ModuleType:
    """Import a module of the generated project's `benchmarks` package (plain Python, no Jinja).

    Its tooling (`tooling`: ports, daphne processes, sessions; `room_client`: the room page's
    protocol) ships with every bake and must stand alone there; the template's tests and
    benchmarks import the same files instead of keeping copies. Needs what the module imports
    (room_client: websockets and httpx).
    """
    if PROJECT_BENCHMARKS not in sys.modules:
        folder = PROJECT_TEMPLATE_DIR / "benchmarks"
        spec = importlib.util.spec_from_file_location(
            PROJECT_BENCHMARKS, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        assert spec and spec.loader, folder
        package = importlib.util.module_from_spec(spec)
        sys.modules[PROJECT_BENCHMARKS] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{PROJECT_BENCHMARKS}.{name}")


def tail(text: str, lines: int = 60) -> str:
    """The end of a long command output, for assertion messages."""
    return "\n".join(text.splitlines()[-lines:])


def pytest_failures(output: str, lines: int = 100) -> str:
    """A failed pytest run's first failure, whole, then its summary: when one test leaves
    something behind and others fail after it, the first is the one that says why."""
    text = output.splitlines()
    start = next((i for i, line in enumerate(text) if re.fullmatch(r"=+ (FAILURES|ERRORS) =+", line)), None)
    first = text[start : start + lines] + ["[...]"] if start is not None else []
    return "\n".join(first + text[-lines:])


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`, so concurrent xdist workers build shared state once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stop_process(process: subprocess.Popen, *, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
