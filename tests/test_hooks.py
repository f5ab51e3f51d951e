"""The answer checks and the hooks' small functions, then cookiecutter's CLI end to end."""

from __future__ import annotations

import json
import shlex
import subprocess
from urllib.parse import urlsplit

import pytest
from baking import TEMPLATE_DIR, clean_env, run_cookiecutter

DEFAULT_ANSWERS = {
    "project_name": "Chat Project",
    "project_slug": "chat_project",
    "description": "A Django project with real-time chat.",
    "author_name": "Your Name",
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
    "setup_environment": False,
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


# --- local_extensions: the answer checks --------------------------------------------------


@pytest.mark.parametrize("slug", ["chat_project", "my_chat", "team2", "a"])
def test_check_slug_accepts_python_identifiers(answer_checks, slug):
    assert answer_checks.check_slug(slug) is None


@pytest.mark.parametrize("slug", ["1abc", "my-app", "My_App", "my app", "", "_private", "class", "café"])
def test_check_slug_rejects_invalid_package_names(answer_checks, slug):
    assert_one_error_line(answer_checks.check_slug(slug), "not a valid Python package name", "e.g. my_chat")


@pytest.mark.parametrize("slug", ["django", "channels", "chat", "config", "users", "accounts", "test", "daphne"])
def test_check_slug_rejects_modules_the_project_imports(answer_checks, slug):
    assert_one_error_line(answer_checks.check_slug(slug), "would shadow", f"my_{slug}")


@pytest.mark.parametrize("slug", ["json", "email", "logging", "secrets", "asyncio"])
def test_check_slug_rejects_standard_library_names(answer_checks, slug):
    assert_one_error_line(answer_checks.check_slug(slug), "would shadow", "standard library")


@pytest.mark.parametrize("email", ["you@example.com", "first.last+chat@sub.example.org"])
def test_check_email_accepts_addresses(answer_checks, email):
    assert answer_checks.check_email(email) is None


@pytest.mark.parametrize("email", ["you", "you@", "@example.com", "you@example", "a b@example.com", ""])
def test_check_email_rejects_non_addresses(answer_checks, email):
    assert_one_error_line(answer_checks.check_email(email), "author_email", "name@example.com")


@pytest.mark.parametrize("name", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires"])
def test_check_timezone_accepts_iana_names(answer_checks, name):
    assert answer_checks.check_timezone(name) is None


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "CEST+2", "", "../etc/passwd"])
def test_check_timezone_rejects_unknown_zones(answer_checks, name):
    assert_one_error_line(answer_checks.check_timezone(name), "timezone", "Europe/Paris")


@pytest.mark.parametrize("domain", ["example.com", "chat.example.org", "localhost", "Example.COM"])
def test_check_domain_accepts_host_names(answer_checks, domain):
    assert answer_checks.check_domain(domain) is None


@pytest.mark.parametrize("domain", ["https://example.com", "example.com/chat", "exa mple.com", "-bad.com", ""])
def test_check_domain_rejects_urls_and_junk(answer_checks, domain):
    assert_one_error_line(answer_checks.check_domain(domain), "domain_name", "example.com")


@pytest.mark.parametrize("version", ["0.1.0", "1", "2.0.0rc1", "1.0.post1", "1.0.dev3"])
def test_check_version_accepts_pep440(answer_checks, version):
    assert answer_checks.check_version(version) is None


@pytest.mark.parametrize("version", ["v1.0", "one", "1.0-beta", ""])
def test_check_version_rejects_others(answer_checks, version):
    assert_one_error_line(answer_checks.check_version(version), "version", "0.1.0")


@pytest.mark.parametrize("name", ["Chat Project", "Café & Co", "O'Brien's chat"])
def test_check_project_name_accepts_plain_text(answer_checks, name):
    assert answer_checks.check_project_name(name) is None


@pytest.mark.parametrize("name", ["", "   "])
def test_check_project_name_rejects_an_empty_name(answer_checks, name):
    assert_one_error_line(answer_checks.check_project_name(name), "project_name is empty", 'project_name="Team Chat"')


@pytest.mark.parametrize(
    ("text", "shown"),
    [('Jane "JJ" Doe', '"'), ("C:\\chat", "\\"), ("<b>Chat</b>", "<"), ("Chat {x}", "{"), ("a\nb", "\\n")],
)
def test_check_plain_text_rejects_what_breaks_toml_python_or_html(answer_checks, text, shown):
    assert_one_error_line(answer_checks.check_plain_text("author_name", text), "author_name", f"contains '{shown}'")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("channel_layer", "in-memory"),
        ("channel_layer", "redis"),
        ("database", "postgresql"),
        ("open_source_license", "Not open source"),
    ],
)
def test_check_choice_accepts_the_listed_values(answer_checks, option, value):
    assert answer_checks.check_choice(option, value) is None


@pytest.mark.parametrize(
    ("option", "value", "listed"),
    [
        ("channel_layer", "kafka", "in-memory, redis"),
        ("database", "mysql", "sqlite, postgresql"),
        ("database", "postgres", "sqlite, postgresql"),
        ("open_source_license", "GPL", "MIT, BSD-3-Clause, Apache-2.0, Not open source"),
    ],
)
def test_check_choice_lists_the_valid_values(answer_checks, option, value, listed):
    assert_one_error_line(answer_checks.check_choice(option, value), f"{option} '{value}' is not one of {listed}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        ("yes", True),
        ("Y", True),
        ("on", True),
        (False, False),
        ("no", False),
        ("0", False),
        ("maybe", None),
        ("", None),
    ],
)
def test_as_bool_reads_yes_no_like_cookiecutter(answer_checks, value, expected):
    assert answer_checks.as_bool(value) is expected


def test_check_yes_no_rejects_other_words(answer_checks):
    assert_one_error_line(
        answer_checks.check_yes_no("use_chat_widget", "maybe"), "use_chat_widget 'maybe' is not yes or no"
    )


def test_check_answers_turns_yes_no_answers_into_booleans(answer_checks):
    given = answers(use_custom_user_model="no", use_chat_widget="yes", seed_demo_data="0", use_pre_commit="on")
    assert answer_checks.check_answers(given) == "yes"
    assert [given[option] for option in answer_checks.YES_NO_OPTIONS] == [False, True, False, False, True]


def test_check_answers_stops_with_the_error_line(answer_checks, capsys):
    with pytest.raises(SystemExit) as stopped:
        answer_checks.check_answers(answers(database="mysql"))
    assert stopped.value.code == 1
    assert capsys.readouterr().err == answer_checks.check_choice("database", "mysql") + "\n"


def test_cookiecutter_json_defaults_pass_and_prompts_name_every_choice(answer_checks):
    context = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())
    for option, choices in answer_checks.CHOICES.items():
        assert context[option] == choices[0]
        assert all(choice in context["__prompts__"][option] for choice in choices)
    for option in answer_checks.YES_NO_OPTIONS:
        assert answer_checks.as_bool(context[option]) is not None
    assert list(context)[list(context).index("open_source_license") + 1] == "__answers_checked"


def test_first_error_is_none_for_the_defaults(answer_checks):
    assert answer_checks.first_error(answers()) is None


def test_first_error_reports_only_the_first_problem(answer_checks):
    error = answer_checks.first_error(answers(project_slug="1abc", author_email="nope"))
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
    assert post_gen.paths_to_prune(answers(channel_layer="redis", database="postgresql")) == []


@pytest.mark.parametrize(
    ("changes", "pruned"),
    [
        ({"use_custom_user_model": False}, ["users"]),
        ({"use_chat_widget": False}, ["templates/includes/chat_widget_fab.html"]),
        ({"use_pre_commit": False}, [".pre-commit-config.yaml"]),
        ({"open_source_license": "Not open source"}, ["LICENSE"]),
        ({"use_custom_user_model": "false"}, ["users"]),
        (
            {"channel_layer": "in-memory"},
            [
                "config/redis_layer.py",
                "config/redis_servers.py",
                "tests/test_redis_layer.py",
                "tests/test_redis_servers.py",
            ],
        ),
        ({"database": "sqlite"}, ["config/postgresql", "tests/test_postgresql_pool.py"]),
    ],
)
def test_paths_to_prune_drops_what_a_disabled_option_needs(post_gen, changes, pruned):
    all_on = answers(channel_layer="redis", database="postgresql")
    assert post_gen.paths_to_prune({**all_on, **changes}) == pruned


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


def env_text(post_gen, **changes) -> str:
    return post_gen.env_file_text(answers(**changes), secret_key="s3cret", database_password="pw")


def test_env_file_text_for_the_defaults(post_gen):
    assert parse_env(env_text(post_gen)) == {
        "DEBUG": "true",
        "SECRET_KEY": "s3cret",
        "ALLOWED_HOSTS": "localhost,127.0.0.1,[::1]",
        "CSRF_TRUSTED_ORIGINS": "http://localhost:8000,http://127.0.0.1:8000",
        "DATABASE_URL": "sqlite:///db.sqlite3",
    }


def test_env_file_text_names_a_postgresql_role_password_and_database(post_gen):
    env = parse_env(env_text(post_gen, database="postgresql", channel_layer="redis"))
    parts = urlsplit(env["DATABASE_URL"])
    assert (parts.scheme, parts.username, parts.password) == ("postgres", "chat_project", "pw")
    assert (parts.hostname, parts.port, parts.path) == ("127.0.0.1", 5432, "/chat_project")
    assert env["REDIS_URL"] == "redis://127.0.0.1:6379/0"


def test_write_env_file_uses_fresh_long_secrets(post_gen, tmp_path):
    envs = []
    for _ in range(2):
        post_gen.write_env_file(tmp_path, answers(database="postgresql"))
        envs.append(parse_env((tmp_path / ".env").read_text()))
    keys = {env["SECRET_KEY"] for env in envs}
    passwords = {urlsplit(env["DATABASE_URL"]).password for env in envs}
    assert len(keys) == len(passwords) == 2
    assert all(len(key) >= 50 for key in keys)
    assert all(len(password) >= 20 for password in passwords)


def test_setup_phases_install_then_migrate_then_seed(post_gen):
    phases = [[" ".join(step) for step in phase] for phase in post_gen.setup_phases(answers())]
    install, migrate, seed = phases
    assert install[0] == "venv"
    assert any("pip install" in step and ".[dev]" in step for step in install)
    assert migrate == ["python manage.py migrate --no-input"]
    assert seed == ["python manage.py seed_chat_data"]


def test_setup_phases_skip_seeding_when_not_asked(post_gen):
    assert len(post_gen.setup_phases(answers(seed_demo_data=False))) == 2


def test_shell_line_names_the_venv_interpreter_and_quotes_extras(post_gen):
    assert post_gen.shell_line(["python", "manage.py", "migrate"]) == ".venv/bin/python manage.py migrate"
    assert post_gen.shell_line(["python", "-m", "pip", "install", "-e", ".[dev]"]).endswith("-e '.[dev]'")


def step_lines(text: str) -> list[str]:
    """The indented commands of the next steps, comments included, without trailing comments."""
    return [line.strip().split("   #")[0].strip() for line in text.splitlines() if line.startswith("    ")]


def test_next_steps_put_services_before_the_targets_that_need_them(post_gen):
    text = post_gen.next_steps(
        answers(database="postgresql", channel_layer="redis"), project="chat_project", set_up=False
    )
    lines = step_lines(text)
    assert lines[0] == "cd chat_project"
    createuser = lines.index("createuser --createdb --pwprompt chat_project")
    createdb = lines.index("createdb --owner chat_project chat_project")
    redis = next(i for i, line in enumerate(lines) if line.startswith("# Redis must be running"))
    assert createuser < createdb < lines.index("make setup") < lines.index("make seed") < lines.index("make run")
    assert redis < lines.index("make setup")
    assert lines[-1] == "make test"


def test_next_steps_skip_setup_once_done(post_gen):
    text = post_gen.next_steps(answers(), project="chat_project", set_up=True)
    assert step_lines(text) == ["cd chat_project", "make run", "make test"]
    assert "demo data seeded" in text


def test_next_steps_once_done_still_say_which_services_must_run(post_gen):
    text = post_gen.next_steps(answers(database="postgresql", channel_layer="redis"), project="x", set_up=True)
    lines = step_lines(text)
    assert "createdb" not in text
    assert lines.index("make run") > max(i for i, line in enumerate(lines) if line.startswith("# "))


# --- cookiecutter's CLI end to end -----------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        ("project_name=", "project_name is empty"),
        ("project_slug=1abc", "project_slug '1abc' is not a valid Python package name"),
        ("project_slug=my-app", "project_slug 'my-app' is not a valid Python package name"),
        ("project_name=2 Fast Chat", "project_slug '2_fast_chat' is not a valid Python package name"),
        ("project_slug=django", "project_slug 'django' would shadow"),
        ("project_slug=chat", "project_slug 'chat' would shadow"),
        ("project_slug=json", "project_slug 'json' would shadow"),
        ('author_name=Jane "JJ" Doe', "author_name 'Jane \"JJ\" Doe' contains '\"'"),
        ("author_email=not-an-email", "author_email 'not-an-email' is not an e-mail address"),
        ("timezone=Mars/Olympus_Mons", "timezone 'Mars/Olympus_Mons' is not a known IANA time zone"),
        ("domain_name=https://example.com", "domain_name 'https://example.com' is not a host name"),
        ("version=v1", "version 'v1' is not a PEP 440 version"),
        ("channel_layer=kafka", "channel_layer 'kafka' is not one of in-memory, redis"),
        ("database=mysql", "database 'mysql' is not one of sqlite, postgresql"),
        ("use_chat_widget=maybe", "use_chat_widget 'maybe' is not yes or no"),
        ("use_custom_user_model=2", "use_custom_user_model '2' is not yes or no"),
        ("open_source_license=GPL", "open_source_license 'GPL' is not one of MIT, BSD-3-Clause"),
    ],
)
def test_invalid_answer_prints_one_error_line_and_nothing_else(tmp_path, answer, fragment):
    output = tmp_path / "out"
    result = run_cookiecutter(answer, "setup_environment=false", output_dir=output)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines() or [""]
    assert result.stderr == line + "\n", result.stderr
    assert_one_error_line(line, fragment)
    assert list(output.iterdir()) == []


@pytest.mark.parametrize(
    ("answers_given", "pruned", "kept"),
    [
        (["use_custom_user_model=no", "use_chat_widget=n"], ["users", "templates/includes/chat_widget_fab.html"], []),
        (["use_custom_user_model=On", "use_pre_commit=FALSE"], [".pre-commit-config.yaml"], ["users"]),
    ],
)
def test_yes_no_answers_are_read_like_cookiecutter_reads_them(tmp_path, answers_given, pruned, kept):
    output = tmp_path / "out"
    result = run_cookiecutter(*answers_given, "setup_environment=false", output_dir=output)
    assert result.returncode == 0, result.stderr
    project = output / "chat_project"
    assert [path for path in pruned if (project / path).exists()] == []
    assert [path for path in kept if not (project / path).exists()] == []


def test_next_steps_name_the_project_from_where_cookiecutter_ran(tmp_path):
    result = run_cookiecutter("setup_environment=false", output_dir=tmp_path / "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Your project is ready in demo/chat_project." in result.stdout
    assert step_lines(result.stdout)[0] == "cd demo/chat_project"


def test_make_demo_runs_the_steps_its_bake_prints(tmp_path):
    """make demo bakes without setup, then runs the printed make targets in the printed folder."""
    demo = tmp_path / "demo"
    bake = run_cookiecutter("setup_environment=false", output_dir=demo, cwd=tmp_path)
    assert bake.returncode == 0, bake.stderr
    printed = step_lines(bake.stdout)
    dry_run = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", "demo", f"DEMO_DIR={demo}"],
        cwd=TEMPLATE_DIR,
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    # (A stale .venv would add its pip install first: look for the bake, not at line one.)
    recipe = dry_run.stdout.splitlines()
    assert any("cookiecutter" in line and "setup_environment=false" in line for line in recipe)
    served = next(shlex.split(line) for line in recipe if f"-C {demo}/chat_project" in line)
    targets = [word for word in served[1:] if word.isalpha()]
    assert printed[0] == "cd demo/chat_project"
    assert [f"make {target}" for target in targets] == printed[1 : 1 + len(targets)]
    assert targets[-1] == "run"


def test_valid_answers_generate_without_setup(tmp_path):
    output = tmp_path / "out"
    result = run_cookiecutter("setup_environment=false", output_dir=output)
    assert result.returncode == 0, result.stderr
    assert "ERROR" not in result.stderr
    assert [p.name for p in output.iterdir()] == ["chat_project"]
    assert "make setup" in result.stdout
    assert not (output / "chat_project" / ".venv").exists()
