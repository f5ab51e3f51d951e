"""One venv per dependency set of a baked project, shared by every bake that needs it.

The key is a hash of the baked pyproject's dependencies plus its `dev` extra, so the
sixteen combinations need at most four venvs, and a test run needs only the ones it
uses. A file lock makes concurrent xdist workers wait for the first one to build it; a
marker written last means a half-built venv (an interrupted run) is rebuilt.
Remove build/venvs/ to pick up new releases within the ranges.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from baking import TEMPLATE_DIR, clean_env, exclusive_lock, tail

VENVS_DIR = TEMPLATE_DIR / "build" / "venvs"
COMPLETE_MARKER = "requirements.txt"


def requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return sorted(project["dependencies"]) + sorted(project["optional-dependencies"]["dev"])


def requirements_key(pyproject: Path) -> str:
    text = "\n".join(requirements(pyproject)) + f"\npython {sys.version_info[:2]}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def venv_for(project: Path) -> Path:
    """The shared venv with the baked project's dependencies (the project itself is not installed)."""
    pyproject = project / "pyproject.toml"
    venv = VENVS_DIR / requirements_key(pyproject)
    with exclusive_lock(VENVS_DIR / f"{venv.name}.lock"):
        if not (venv / COMPLETE_MARKER).is_file():
            build_venv(venv, requirements(pyproject))
    return venv


def build_venv(venv: Path, packages: list[str]) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    result = subprocess.run(
        [*pip, *packages], capture_output=True, text=True, timeout=900, env=clean_env(), check=False
    )
    assert result.returncode == 0, f"pip install failed for {venv}:\n{tail(result.stdout + result.stderr)}"
    (venv / COMPLETE_MARKER).write_text("\n".join(packages) + "\n")
