"""The hooks' small functions, and the pre-generation hook failing end to end."""

from __future__ import annotations

import pytest
from baking import run_cookiecutter

DEFAULT_ANSWERS = {
    "project_slug": "chat_project",
    "author_email": "you@example.com",
    "timezone": "UTC",
    "domain_name": "example.com",
    "version": "0.1.0",
    "channel_layer": "in-memory",
    "database": "sqlite",
    "use_custom_user_model": True,
    "use_chat_widget": True,
    "use_pre_commit": True,
    "seed_demo_data": True,
    "open_source_license": "MIT",
}


def answers(**changes) -> dict:
    return {**DEFAULT_ANSWERS, **changes}


def assert_one_error_line(message: str | None, *fragments: str) -> None:
    assert message is not None
    assert message.startswith("ERROR: ")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


# --- pre_gen_project -------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["chat_project", "my_chat", "team2", "a"])
def test_check_slug_accepts_python_identifiers(pre_gen, slug):
    assert pre_gen.check_slug(slug) is None


@pytest.mark.parametrize("slug", ["1abc", "my-app", "My_App", "my app", "", "_private", "class", "café"])
def test_check_slug_rejects_invalid_package_names(pre_gen, slug):
    assert_one_error_line(pre_gen.check_slug(slug), "not a valid Python package name", "e.g. my_chat")


@pytest.mark.parametrize("slug", ["django", "channels", "chat", "config", "users", "accounts", "test", "daphne"])
def test_check_slug_rejects_modules_the_project_imports(pre_gen, slug):
    assert_one_error_line(pre_gen.check_slug(slug), "would shadow", f"my_{slug}")


@pytest.mark.parametrize("slug", ["json", "email", "logging", "secrets", "asyncio"])
def test_check_slug_rejects_standard_library_names(pre_gen, slug):
    assert_one_error_line(pre_gen.check_slug(slug), "would shadow", "standard library")


@pytest.mark.parametrize("email", ["you@example.com", "first.last+chat@sub.example.org"])
def test_check_email_accepts_addresses(pre_gen, email):
    assert pre_gen.check_email(email) is None


@pytest.mark.parametrize("email", ["you", "you@", "@example.com", "you@example", "a b@example.com", ""])
def test_check_email_rejects_non_addresses(pre_gen, email):
    assert_one_error_line(pre_gen.check_email(email), "author_email", "name@example.com")


@pytest.mark.parametrize("name", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires"])
def test_check_timezone_accepts_iana_names(pre_gen, name):
    assert pre_gen.check_timezone(name) is None


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "CEST+2", "", "../etc/passwd"])
def test_check_timezone_rejects_unknown_zones(pre_gen, name):
    assert_one_error_line(pre_gen.check_timezone(name), "timezone", "Europe/Paris")


@pytest.mark.parametrize("domain", ["example.com", "chat.example.org", "localhost", "Example.COM"])
def test_check_domain_accepts_host_names(pre_gen, domain):
    assert pre_gen.check_domain(domain) is None


@pytest.mark.parametrize("domain", ["https://example.com", "example.com/chat", "exa mple.com", "-bad.com", ""])
def test_check_domain_rejects_urls_and_junk(pre_gen, domain):
    assert_one_error_line(pre_gen.check_domain(domain), "domain_name", "example.com")


@pytest.mark.parametrize("version", ["0.1.0", "1", "2.0.0rc1", "1.0.post1", "1.0.dev3"])
def test_check_version_accepts_pep440(pre_gen, version):
    assert pre_gen.check_version(version) is None


@pytest.mark.parametrize("version", ["v1.0", "one", "1.0-beta", ""])
def test_check_version_rejects_others(pre_gen, version):
    assert_one_error_line(pre_gen.check_version(version), "version", "0.1.0")


def test_first_error_is_none_for_the_defaults(pre_gen):
    assert pre_gen.first_error(answers()) is None


def test_first_error_reports_only_the_first_problem(pre_gen):
    error = pre_gen.first_error(answers(project_slug="1abc", author_email="nope"))
    assert_one_error_line(error, "project_slug")
    assert "author_email" not in error


# --- post_gen_project ------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, "true", "True", "yes", "y", "1", "on"])
def test_as_bool_reads_truthy_answers(post_gen, value):
    assert post_gen.as_bool(value) is True


@pytest.mark.parametrize("value", [False, "false", "no", "0", "", "off"])
def test_as_bool_reads_falsy_answers(post_gen, value):
    assert post_gen.as_bool(value) is False


def test_paths_to_prune_keeps_everything_with_all_options_on(post_gen):
    assert post_gen.paths_to_prune(answers()) == []


@pytest.mark.parametrize(
    ("changes", "pruned"),
    [
        ({"use_custom_user_model": False}, "users"),
        ({"use_chat_widget": False}, "templates/includes/chat_widget_fab.html"),
        ({"use_pre_commit": False}, ".pre-commit-config.yaml"),
        ({"open_source_license": "Not open source"}, "LICENSE"),
        ({"use_custom_user_model": "false"}, "users"),
    ],
)
def test_paths_to_prune_drops_what_a_disabled_option_needs(post_gen, changes, pruned):
    assert post_gen.paths_to_prune(answers(**changes)) == [pruned]


def test_prune_removes_files_and_folders_and_ignores_missing(post_gen, tmp_path):
    (tmp_path / "users" / "migrations").mkdir(parents=True)
    (tmp_path / "users" / "models.py").write_text("")
    (tmp_path / "LICENSE").write_text("")
    (tmp_path / "keep.py").write_text("")
    post_gen.prune(tmp_path, ["users", "LICENSE", "not-there.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.py"]


def parse_env(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_env_file_text_for_the_defaults(post_gen):
    env = parse_env(post_gen.env_file_text(answers(), "s3cret"))
    assert env == {
        "DEBUG": "true",
        "SECRET_KEY": "s3cret",
        "ALLOWED_HOSTS": "localhost,127.0.0.1,[::1]",
        "CSRF_TRUSTED_ORIGINS": "http://localhost:8000,http://127.0.0.1:8000",
        "DATABASE_URL": "sqlite:///db.sqlite3",
    }


def test_env_file_text_points_at_local_services(post_gen):
    env = parse_env(post_gen.env_file_text(answers(database="postgresql", channel_layer="redis"), "k"))
    assert env["DATABASE_URL"] == "postgres://localhost:5432/chat_project"
    assert env["REDIS_URL"] == "redis://127.0.0.1:6379/0"


def test_write_env_file_uses_a_fresh_long_secret(post_gen, tmp_path):
    keys = set()
    for _ in range(2):
        post_gen.write_env_file(tmp_path, answers())
        keys.add(parse_env((tmp_path / ".env").read_text())["SECRET_KEY"])
    assert len(keys) == 2
    assert all(len(key) >= 50 for key in keys)


def test_setup_steps_install_migrate_and_seed(post_gen):
    steps = [" ".join(step) for step in post_gen.setup_steps(answers())]
    assert steps[-2:] == ["python manage.py migrate --no-input", "python manage.py seed_chat_data"]
    assert any("pip install" in step and ".[dev]" in step for step in steps)


def test_setup_steps_skip_seeding_when_not_asked(post_gen):
    steps = [" ".join(step) for step in post_gen.setup_steps(answers(seed_demo_data=False))]
    assert not any("seed_chat_data" in step for step in steps)


def test_shell_line_names_the_venv_interpreter(post_gen):
    assert post_gen.shell_line(["python", "manage.py", "migrate"]) == ".venv/bin/python manage.py migrate"


def test_next_steps_tell_how_to_set_up_when_not_done(post_gen):
    text = post_gen.next_steps(answers(database="postgresql", channel_layer="redis"), set_up=False)
    assert "cd chat_project" in text
    assert "make setup" in text
    assert "make seed" in text
    assert "PostgreSQL" in text
    assert "Redis" in text
    assert "make run" in text


def test_next_steps_skip_setup_once_done(post_gen):
    text = post_gen.next_steps(answers(), set_up=True)
    assert "make setup" not in text
    assert "make run" in text
    assert "PostgreSQL" not in text
    assert "Redis" not in text


def test_failed_setup_prints_manual_commands_and_keeps_going(post_gen, tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(post_gen.subprocess, "run", fail)
    assert post_gen.run_setup(tmp_path, answers()) == (False, "")
    err = capsys.readouterr().err
    assert "WARNING: setup step failed" in err
    assert "-m venv .venv" in err
    assert ".venv/bin/python manage.py migrate --no-input" in err


# --- the hooks end to end --------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        ("project_slug=1abc", "project_slug '1abc' is not a valid Python package name"),
        ("project_slug=my-app", "project_slug 'my-app' is not a valid Python package name"),
        ("project_name=2 Fast Chat", "project_slug '2_fast_chat' is not a valid Python package name"),
        ("project_slug=django", "project_slug 'django' would shadow"),
        ("project_slug=chat", "project_slug 'chat' would shadow"),
        ("project_slug=json", "project_slug 'json' would shadow"),
        ("author_email=not-an-email", "author_email 'not-an-email' is not an e-mail address"),
        ("timezone=Mars/Olympus_Mons", "timezone 'Mars/Olympus_Mons' is not a known IANA time zone"),
        ("domain_name=https://example.com", "domain_name 'https://example.com' is not a host name"),
    ],
)
def test_invalid_answer_fails_with_one_error_line_and_leaves_nothing(tmp_path, answer, fragment):
    output = tmp_path / "out"
    result = run_cookiecutter(answer, "setup_environment=false", output_dir=output)
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(error_lines) == 1, result.stderr
    assert_one_error_line(error_lines[0], fragment)
    assert list(output.iterdir()) == []


def test_valid_answers_generate_without_setup(tmp_path):
    output = tmp_path / "out"
    result = run_cookiecutter("setup_environment=false", output_dir=output)
    assert result.returncode == 0, result.stderr
    assert "ERROR" not in result.stderr
    assert [p.name for p in output.iterdir()] == ["chat_project"]
    assert "make setup" in result.stdout
    assert not (output / "chat_project" / ".venv").exists()
