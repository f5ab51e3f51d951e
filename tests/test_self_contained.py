"""chat/ drops into any Django project: the generated README's steps, applied to a fresh one.

The steps are read from the baked README's "Use chat/ in another project" section, so what
this test does is what the README says, and they cannot drift apart. A code block preceded
by "add to the end of `path`", "replace `path` with" or "create `path` with" is written to
that file; a bash block is run in the new project (pip only checks, without installing,
that the shared venv already has what it names). Then the chat app's own tests run there.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from baking import clean_env, run_cookiecutter, tail
from project_venvs import venv_for

SECTION = "## Use chat/ in another project"
HOST = "hostsite"
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w+)\n(?P<body>.*?)^(?P=indent)```$", re.M | re.S)
FILE_ACTION = re.compile(r"(add to the end of|replace|create) `([^`]+)`(?: with)?:?\s*$", re.I)

pytestmark = pytest.mark.slow


def integration_section(readme: str) -> str:
    start = readme.index(SECTION)
    following = readme.find("\n## ", start + len(SECTION))
    return readme[start : following if following != -1 else None]


def integration_steps(readme: str) -> list[tuple[str, str | None, str]]:
    """(language, action or None, code) for each code block of the section, in order.

    The action ("add to the end of PATH", ...) is read from the prose just before the block.
    """
    section = integration_section(readme)
    steps, prose_start = [], 0
    for block in FENCE.finditer(section):
        prose = section[prose_start : block.start()].strip()
        action = FILE_ACTION.search(prose.splitlines()[-1]) if prose else None
        lines = block.group("body").splitlines()
        code = "\n".join(line.removeprefix(block.group("indent")) for line in lines) + "\n"
        steps.append((block.group("lang"), action and f"{action.group(1).lower()} {action.group(2)}", code))
        prose_start = block.end()
    return steps


@pytest.fixture(scope="module")
def baked(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("self-contained") / "out"
    result = run_cookiecutter("setup_environment=false", output_dir=output)
    assert result.returncode == 0, tail(result.stdout + result.stderr)
    return output / "chat_project"


@pytest.fixture(scope="module")
def host(baked, tmp_path_factory) -> tuple[Path, Path]:
    """A `django-admin startproject` with the README's steps applied; returns (project dir, venv)."""
    venv = venv_for(baked)
    root = tmp_path_factory.mktemp("host")
    # `-m django`: a shared venv's console scripts name the interpreter of the tree that built it.
    run(venv, [str(venv / "bin" / "python"), "-m", "django", "startproject", HOST, str(root)], cwd=root)
    readme = (baked / "README.md").read_text()
    for language, action, code in integration_steps(readme):
        code = code.replace("<your_project>", HOST).replace("path/to/this_project", str(baked))
        if action:
            apply_to_file(root, action.replace("<your_project>", HOST), code)
        elif language == "bash":
            run_shell(venv, code, cwd=root)
        else:
            pytest.fail(f"a {language} block in the README says neither which file it goes in nor how:\n{code}")
    return root, venv


def apply_to_file(root: Path, action: str, code: str) -> None:
    verb, _, path = action.rpartition(" ")
    target = root / path
    if verb == "add to the end of":
        assert target.is_file(), f"the README adds to {path}, which a fresh project does not have"
        target.write_text(target.read_text() + "\n" + code)
    else:  # replace, create
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)


def run_shell(venv: Path, script: str, *, cwd: Path) -> None:
    for line in script.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = shlex.split(line)
        if words[:2] == ["pip", "install"]:
            # Check, never install: the shared venv must already satisfy what the README names.
            words = [str(venv / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--no-index", *words[2:]]
            run(venv, words, cwd=cwd)
        elif words[0] in {"python", "pytest"}:
            continue  # migrate and the test run are asserted by the tests below
        else:
            run(venv, ["bash", "-euo", "pipefail", "-c", line], cwd=cwd)


def run(venv: Path, command: list[str], *, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    environment = clean_env(PATH=f"{venv / 'bin'}:{clean_env()['PATH']}", VIRTUAL_ENV=str(venv))
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment, check=False
    )
    assert result.returncode == 0, f"{shlex.join(command)} failed:\n{tail(result.stdout + result.stderr)}"
    return result


def readme_commands(baked: Path) -> list[str]:
    """The python/pytest lines of the README's bash blocks: what the last step runs."""
    steps = integration_steps((baked / "README.md").read_text())
    lines = [
        line.strip()
        for language, action, code in steps
        if language == "bash" and not action
        for line in code.splitlines()
    ]
    return [line for line in lines if line.split(" ", 1)[0] in {"python", "pytest"}]


def test_the_readme_documents_every_integration_step(baked):
    steps = integration_steps((baked / "README.md").read_text())
    actions = {action.split(" ")[-1] for _, action, _ in steps if action}
    assert {"<your_project>/settings.py", "<your_project>/urls.py", "<your_project>/asgi.py"} <= actions
    assert {"templates/base.html", "pytest.ini"} <= actions
    assert readme_commands(baked) == ["python manage.py migrate", "pytest chat"]


def test_the_host_project_checks_clean_and_finds_the_chat_static_files(host):
    root, venv = host
    run(venv, ["python", "manage.py", "check", "--fail-level", "WARNING"], cwd=root)
    found = run(
        venv,
        # chat.css @imports message-changes.css: the README's copy step must bring both.
        [
            "python",
            "manage.py",
            "findstatic",
            "css/chat.css",
            "css/message-changes.css",
            "js/components/chat/message-send.js",
        ],
        cwd=root,
    )
    assert str(root / "static") in found.stdout
    application = f"from {HOST}.asgi import application; print(type(application).__name__)"
    assert run(venv, ["python", "-c", application], cwd=root).stdout.strip() == "ProtocolTypeRouter"


def test_the_chat_tests_pass_in_the_host_project(host, baked):
    root, venv = host
    assert not (root / "config").exists() and not (root / "conftest.py").exists()  # nothing of the generated project
    for command in readme_commands(baked):
        words = shlex.split(command)
        if words[0] == "pytest":  # the README's test run, in parallel like the project's own `make test`
            words = ["python", "-m", "pytest", *words[1:], "-q", "-p", "no:cacheprovider", "-n", "2"]
        result = run(venv, words, cwd=root, timeout=900)
    assert " passed" in result.stdout, tail(result.stdout)
