"""The template's own Python (local_extensions.py, hooks, tests, benchmarks) passes ruff with the top config."""

import subprocess
import sys

import pytest
from baking import TEMPLATE_DIR


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_hooks_tests_and_benchmarks_pass_ruff(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache", "local_extensions.py", "hooks", "tests", "benchmarks"],
        cwd=TEMPLATE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
