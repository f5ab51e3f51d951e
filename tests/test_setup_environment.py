"""setup_environment end to end: the hook installs, migrates and seeds; daphne then serves it.

This is the one bake that lets the post-generation hook reach PyPI, as a user's first
`cookiecutter` run does; another runs it offline and finds the project as generated.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from baking import clean_env, exclusive_lock, load_project_module, run_cookiecutter, stop_process, tail
from conftest import unavailable

tooling = load_project_module("tooling")  # ports and processes, shared with the project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def set_up_project(tmp_path_factory, worker_id) -> tuple[Path, str]:
    """The bake with setup_environment=true, done once per run and shared by the xdist workers."""
    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent  # the workers' basetemps sit side by side in one run folder
    output, printed = shared / "setup-environment", shared / "setup-environment.out"
    with exclusive_lock(shared / "setup-environment.lock"):
        if not printed.is_file():
            result = run_cookiecutter("setup_environment=true", output_dir=output, timeout=1200)
            assert result.returncode == 0, tail(result.stdout + result.stderr)
            assert "WARNING: setup step failed" not in result.stderr, tail(result.stdout + result.stderr)
            printed.write_text(result.stdout)
    return output / "chat_project", printed.read_text()


def test_hook_creates_venv_with_the_project_installed(set_up_project):
    project, _ = set_up_project
    python = project / ".venv" / "bin" / "python"
    assert python.is_file()
    assert (project / ".venv" / "bin" / "daphne").is_file()
    result = subprocess.run([str(python), "-c", "import django, channels, django_htmx"], check=False)
    assert result.returncode == 0


def manage(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "manage.py", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )


def test_hook_migrates_and_seeds(set_up_project):
    project, _ = set_up_project
    assert (project / "db.sqlite3").is_file()
    assert "[ ]" not in manage(project, "showmigrations").stdout
    count_users = "from django.contrib.auth import get_user_model as m; print(m().objects.count())"
    result = manage(project, "shell", "--verbosity", "0", "-c", count_users)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 0


def demo_login(printed: str) -> tuple[str, str]:
    """The first seeded login from the hook's output: a "Demo logins (password ...: X)" header, then names."""
    header = re.search(r"demo logins.*?password[^:\n]*:\s*([^\s)]+)", printed, re.IGNORECASE)
    assert header, f"no demo logins printed:\n{tail(printed)}"
    first = re.search(r"^\s+([\w.@+-]+)", printed[header.end() :], re.MULTILINE)
    assert first, f"no demo user listed:\n{tail(printed)}"
    return first.group(1), header.group(1)


def test_hook_prints_next_steps_and_demo_logins(set_up_project):
    _, printed = set_up_project
    assert "make run" in printed
    assert demo_login(printed)


@pytest.fixture(scope="module")
def server(set_up_project, tmp_path_factory):
    """daphne from the project's own .venv, as `make run` would serve it in production."""
    project, _ = set_up_project
    port = tooling.free_port()
    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [str(project / ".venv" / "bin" / "daphne"), "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
            cwd=project,
            env=clean_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base_url, process, log)
        yield base_url
    finally:
        stop_process(process)


def wait_until_serving(base_url: str, process: subprocess.Popen, log: Path, deadline: float = 60) -> None:
    try:
        tooling.wait_for_port(int(base_url.rsplit(":", 1)[1]), deadline, process=process)
    except RuntimeError as exc:
        pytest.fail(f"daphne did not serve ({exc}):\n{tail(log.read_text())}")


class Browser:
    """Just enough of a browser: cookies, CSRF token from the form, redirects followed."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[int, str, str]:
        return self._open(urllib.request.Request(self.base_url + path))

    def post_form(self, path: str, fields: dict[str, str]) -> tuple[int, str, str]:
        status, _, page = self.get(path)
        assert status == 200, page
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, "no CSRF token in the form"
        body = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token.group(1)}).encode()
        headers = {"Referer": self.base_url + path}
        return self._open(urllib.request.Request(self.base_url + path, data=body, headers=headers))

    def _open(self, request: urllib.request.Request) -> tuple[int, str, str]:
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.url, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.url, error.read().decode(errors="replace")


def test_daphne_serves_the_login_page(server):
    status, _, page = Browser(server).get("/accounts/login/")
    assert status == 200
    assert "csrfmiddlewaretoken" in page


def test_seeded_demo_user_logs_in_and_gets_the_chat_page(server, set_up_project):
    _, printed = set_up_project
    username, password = demo_login(printed)
    browser = Browser(server)
    status, url, page = browser.post_form("/accounts/login/", {"username": username, "password": password})
    assert status == 200, page
    assert not url.endswith("/accounts/login/"), f"the login of {username} was refused"
    status, url, _ = browser.get("/chat/")
    assert status == 200
    assert urllib.parse.urlsplit(url).path == "/chat/"


@pytest.fixture(scope="module")
def build_backend_only(tmp_path_factory) -> Path:
    """A folder holding only the project's build backend: offline, but with pip's cache of setuptools."""
    wheels = tmp_path_factory.mktemp("wheels")
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(wheels), "setuptools"]
    result = subprocess.run(download, capture_output=True, text=True, timeout=300, env=clean_env(), check=False)
    if result.returncode != 0:
        unavailable(f"cannot download setuptools from the package index: {tail(result.stderr, 3)}")
    return wheels


def test_offline_setup_leaves_the_project_as_generated_and_says_what_is_left(tmp_path, build_backend_only):
    """pip builds the project's metadata, then finds no Django: nothing the failed setup made stays."""
    offline = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(build_backend_only)}
    result = run_cookiecutter("setup_environment=true", output_dir=tmp_path / "out", cwd=tmp_path, env=offline)
    assert result.returncode == 0, tail(result.stdout + result.stderr)
    generated = run_cookiecutter("setup_environment=false", output_dir=tmp_path / "plain", cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr

    assert sorted(os.listdir(tmp_path / "out" / "chat_project")) == sorted(
        os.listdir(tmp_path / "plain" / "chat_project")
    )
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, result.stderr
    assert "pip install --quiet -e '.[dev]'` failed: ERROR: No matching distribution found for Django" in warnings[0]
    assert "Traceback" not in result.stderr
    steps = [line.strip().split("   #")[0].strip() for line in result.stdout.splitlines() if line.startswith("    ")]
    assert steps == ["cd out/chat_project", "make setup", "make seed", "make run", "make test"]
