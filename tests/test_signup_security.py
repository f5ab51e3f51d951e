"""Sign-up on served projects: the confirmation mail through a real SMTP server, and one
address signed up from many browsers at once making exactly one account.

Each project (SQLite and PostgreSQL, custom user model and Django's) is served by several
daphne processes on one database, so requests really run side by side, and mails its
sign-up links to an aiosmtpd server started here.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, build_opener

import pytest
from baking import clean_env
from conftest import unavailable
from live_servers import HOST, Project, drop_database_at_teardown, free_port, start_servers, with_database
from project_venvs import venv_for

pytestmark = pytest.mark.slow

PASSWORD = "a-long-Unusual-passphrase-42"
RACERS = 20
SERVERS = 3
CONFIRM_LINK = re.compile(r"http://[^/\s]+(/accounts/signup/confirm/[^/\s]+/)")
CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
# Generous limits: this test is about races, not limits.
RATE_LIMITS = "signup_ip=1000/m,signup_email=1000/m,login_username=1000/m,login_ip=1000/m"
COMBINATIONS = {
    "sqlite-custom-user": {"database": "sqlite", "use_custom_user_model": True},
    "sqlite-auth-user": {"database": "sqlite", "use_custom_user_model": False},
    "postgresql-custom-user": {"database": "postgresql", "channel_layer": "redis", "use_custom_user_model": True},
    "postgresql-auth-user": {"database": "postgresql", "channel_layer": "redis", "use_custom_user_model": False},
}


class Mailbox:
    """An SMTP server on 127.0.0.1 that keeps every message it is sent."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list = []
        self.port = free_port()
        self.controller = Controller(self, hostname=HOST, port=self.port)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"

    def wait_for(self, count: int, *, to: str, timeout: float = 60) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in self.messages if m["To"].lower() == to.lower()]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        pytest.fail(f"{count} mails to {to} did not arrive; got {len(self.messages)} in all", pytrace=False)


@pytest.fixture(scope="module")
def mailbox():
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        unavailable("aiosmtpd is not installed (pip install -r requirements-dev.txt)")
    box = Mailbox()
    box.controller.start()
    yield box
    box.controller.stop()


@pytest.fixture(scope="module", params=list(COMBINATIONS))
def served(request, cookies_session, mailbox, tmp_path_factory):
    """A migrated project of one combination, served by SERVERS daphne processes."""
    answers = COMBINATIONS[request.param]
    result = cookies_session.bake(extra_context={"setup_environment": False, **answers})
    assert result.exit_code == 0, result.exception
    path = Path(result.project_path)
    env = clean_env(
        DEBUG="true",
        SECRET_KEY=secrets.token_urlsafe(50),
        EMAIL_URL=f"smtp://{HOST}:{mailbox.port}",
        ACCOUNT_RATE_LIMITS=RATE_LIMITS,
        LOG_LEVEL="WARNING",
    )
    if answers["database"] == "postgresql":
        postgres_url, name = request.getfixturevalue("postgres_url"), f"chat_signup_{secrets.token_hex(4)}"
        env.update(DATABASE_URL=with_database(postgres_url, name), REDIS_URL=request.getfixturevalue("redis_url"))
    else:
        env["DATABASE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('db') / 'db.sqlite3'}"
    project = Project(path, venv_for(path), env)
    if answers["database"] == "postgresql":
        create_database(project, request, postgres_url, name)
    project.run("manage.py", "migrate", "--no-input")
    return project, start_servers(project, tmp_path_factory.mktemp(request.param), SERVERS, request)


def create_database(project: Project, request, postgres_url: str, name: str) -> None:
    # The template suite's venv has no PostgreSQL driver; the project's has psycopg.
    admin = ["-c", "import psycopg, sys; psycopg.connect(sys.argv[1], autocommit=True).execute(sys.argv[2])"]
    project.run(*admin, postgres_url, f'CREATE DATABASE "{name}"')
    drop_database_at_teardown(project, request, postgres_url, name)


class Browser:
    """Cookies and CSRF tokens like a browser's; answers (status, final path, page)."""

    def __init__(self, port: int):
        self.base = f"http://{HOST}:{port}"
        self.opener = build_opener(HTTPCookieProcessor(CookieJar()))
        self.csrf = ""

    def open(self, path: str, data: dict | None = None) -> tuple[int, str, str]:
        body = urlencode({**data, "csrfmiddlewaretoken": self.csrf}).encode() if data is not None else None
        try:
            with self.opener.open(self.base + path, data=body, timeout=60) as response:
                status, url, text = response.status, response.url, response.read().decode()
        except HTTPError as error:
            status, url, text = error.code, error.url, error.read().decode()
        token = CSRF_FIELD.search(text)
        self.csrf = token.group(1) if token else self.csrf
        return status, url.removeprefix(self.base), text

    def sign_up(self, username: str, email: str) -> tuple[int, str, str]:
        self.open("/accounts/signup/")
        form = {"username": username, "email": email, "password1": PASSWORD, "password2": PASSWORD}
        return self.open("/accounts/signup/", form)


def confirm_path(message) -> str:
    return CONFIRM_LINK.search(message.get_payload(decode=True).decode()).group(1)


def accounts_with(project: Project, email: str) -> int:
    code = (
        "from django.contrib.auth import get_user_model; "
        f"print(get_user_model().objects.filter(email__iexact={email!r}).count())"
    )
    return int(project.run("manage.py", "shell", "-c", code).stdout.strip().splitlines()[-1])


def test_the_mail_goes_through_smtp_and_its_link_opens_the_inbox(served, mailbox):
    project, servers = served
    browser = Browser(servers[0].port)
    email = f"erin-{secrets.token_hex(3)}@example.com"

    status, path, page = browser.sign_up("erin" + secrets.token_hex(3), email)
    [message] = mailbox.wait_for(1, to=email)
    link = confirm_path(message)
    confirm_status, _, confirm_page = browser.open(link)
    final_status, final_path, _ = browser.open(link, {"password": PASSWORD})

    assert (status, path) == (200, "/accounts/signup/sent/")
    assert "Check your e-mail" in page
    assert message["Subject"] == "Confirm your sign-up"
    assert confirm_status == 200 and email in confirm_page
    assert (final_status, final_path) == (200, "/chat/")
    assert accounts_with(project, email) == 1


def test_one_address_signed_up_from_many_browsers_at_once_makes_one_account(served, mailbox):
    project, servers = served
    tag = secrets.token_hex(3)
    address = f"race-{tag}@example.com"
    variants = [address.upper() if n % 2 else address.title() for n in range(RACERS)]
    browsers = [Browser(servers[n % len(servers)].port) for n in range(RACERS)]
    usernames = [f"racer{n}-{tag}" for n in range(RACERS)]

    signed_up = run_together([lambda n=n: browsers[n].sign_up(usernames[n], variants[n]) for n in range(RACERS)])
    links = {}
    for message in mailbox.wait_for(RACERS, to=address):
        body = message.get_payload(decode=True).decode()
        links[next(name for name in usernames if f'"{name}"' in body)] = confirm_path(message)
    for n, browser in enumerate(browsers):
        browser.open(links[usernames[n]])
    confirmed = run_together(
        [lambda n=n: browsers[n].open(links[usernames[n]], {"password": PASSWORD}) for n in range(RACERS)]
    )

    assert {(status, path) for status, path, _ in signed_up} == {(200, "/accounts/signup/sent/")}
    outcomes = sorted((status, path) for status, path, _ in confirmed)
    assert outcomes.count((200, "/chat/")) == 1, outcomes
    refused = [page for status, _, page in confirmed if status == 400]
    assert len(refused) == RACERS - 1, outcomes  # no 500s: each loser sees why
    assert all("already exists" in page or "invalid, used or expired" in page for page in refused)
    assert accounts_with(project, address) == 1


def run_together(calls: list) -> list:
    """Start every call at the same moment, each on its own thread; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))
