"""The generated deploy/ kit, run with the real programs: nginx from Debian in front of two
app processes of a Redis + PostgreSQL bake.

The project is deployed as its README says: deploy/build.sh (a venv of its own and
collectstatic), deploy/release.sh (migrate), two deploy/start.sh processes, and nginx
running deploy/nginx-site.conf with only its ports and paths changed, unprivileged-style
from a temporary prefix. Through nginx, in Chromium: two people log in and chat live with
their rooms on different app processes, static files come from STATIC_ROOT by nginx
itself, a POST at the size limit is taken and one byte more is a 413, a quiet room stays
connected for 3 minutes under `proxy_read_timeout 60s`, and a socket whose connection goes
silent is dropped by its heartbeat and reconnects. Over plain HTTP and websockets: origins
and log-in limits see what nginx saw, not what a client claims in X-Forwarded-*, and
start.sh trusts those headers only with BEHIND_TLS_PROXY. deploy/scheduled.sh purges. The
systemd units are checked with `systemd-analyze verify`, the site of every option with
`nginx -t`, the scripts with shellcheck; the Dockerfile and compose.yaml cannot be run
here, so only their shape is checked.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import test_browser
import yaml
from baking import served_env, stop_process, tail
from conftest import unavailable
from live_servers import HOST, free_port, redis_database_of_this_worker, with_database
from served_project import DEMO_PASSWORD, SETUP_SCRIPT, tooling
from test_browser import DESKTOP, goto_with_socket, room_path, send

browser = test_browser.browser  # one Chromium for the module (skips, or fails in CI, without it)

try:
    from playwright.sync_api import Page, expect
except ImportError:  # the `browser` fixture skips or fails
    expect = None

SLUG = "chat_project"
REDIS_POSTGRES = {"channel_layer": "redis", "database": "postgresql", "use_custom_user_model": True}
SYSTEM_PATH = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
# The chat's request limit (CHAT_MAX_REQUEST_BYTES) and the site's client_max_body_size.
BODY_LIMIT = 64 * 1024
# What the site's Cache-Control says for a file with a content hash in its name; WhiteNoise,
# were the app to answer, says "max-age=315360000, public, immutable".
HASHED_FILE_CACHE = "public, max-age=31536000, immutable"
IDLE_SECONDS = 180
LOGIN_IP_LIMIT = 3  # failed log-ins per client address, for the deployment
HEARTBEAT_SECONDS = 25  # HEARTBEAT_MS in static/js/components/chat/socket-heartbeat.js
ROOM_SOCKET = re.compile(r"/ws/chat/\d+/(\?|$)")  # a room socket asks ?after= the newest message shown
# The room page's socket (a ReconnectingSocket, chat-websocket.js), as the page keeps it.
ROOM_SOCKET_JS = "document.querySelector('main [data-chat-room]').chatRoom.socket"
UPSTREAM_HEADER = "x-upstream-addr"  # added by the test's nginx.conf, never by the site


def program(name: str) -> str:
    path = shutil.which(name, path=SYSTEM_PATH)
    if path is None:
        unavailable(f"{name} is not installed (apt-get install {'systemd' if 'systemd' in name else name})")
    return path


def bake(cookies, **answers) -> Path:
    result = cookies.bake(extra_context={"setup_environment": False, **answers})
    assert result.exit_code == 0, result.exception
    return Path(result.project_path)


# --- nginx, as an unprivileged user would run it -----------------------------------------


def site_for_test(project: Path, *, listen: int, app_ports: list[int]) -> str:
    """deploy/nginx-site.conf with its ports and the project's path replaced, and nothing else."""
    site = (project / "deploy" / "nginx-site.conf").read_text()
    replacements = {"listen 80;": f"listen {HOST}:{listen};", f"/srv/{SLUG}/": f"{project}/"}
    for number, port in enumerate(app_ports, start=1):
        replacements[f"server 127.0.0.1:800{number};"] = f"server {HOST}:{port};"
    for old, new in replacements.items():
        assert old in site, f"deploy/nginx-site.conf no longer has {old!r}"
        site = site.replace(old, new)
    return site


def nginx_conf(prefix: Path, site: str) -> Path:
    """A main nginx.conf in `prefix` that includes the site: pid, logs and temp files there.

    The access log names the upstream of each request, and each proxied response says
    which app process answered (X-Upstream-Addr), so a test can tell where a socket went.
    """
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "site.conf").write_text(site)
    # As root, nginx's workers would switch to `nobody`, who cannot read pytest's private
    # temporary folders (the static files).
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format upstream '$request_method $uri $status upstream=$upstream_addr';
    access_log {prefix / "access.log"} upstream;
    add_header X-Upstream-Addr $upstream_addr always;
{temp_paths}    include {prefix / "site.conf"};
}}
"""
    )
    return conf


def nginx_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program("nginx"), "-t", "-p", str(conf.parent), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class Nginx:
    def __init__(self, prefix: Path, site: str, port: int):
        self.prefix, self.port = prefix, port
        self.conf = nginx_conf(prefix, site)
        checked = nginx_test(self.conf)
        assert checked.returncode == 0, checked.stderr
        self.log = (prefix / "nginx.out").open("ab")
        command = [program("nginx"), "-p", str(prefix), "-c", str(self.conf), "-g", "daemon off;"]
        # A process group of its own: `pause()` freezes the master and its workers together.
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            tooling.wait_for_port(port, 30, process=self.process)
        except RuntimeError as exc:
            pytest.fail(f"nginx did not start ({exc}):\n{self.output()}", pytrace=False)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def output(self) -> str:
        logs = [self.prefix / "nginx.out", self.prefix / "error.log"]
        return "\n".join(tail(path.read_text(errors="replace"), 30) for path in logs if path.exists())

    def pause(self) -> None:
        """Freeze nginx (SIGSTOP): connections stay open and nothing answers, like a dead network path."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        stop_process(self.process)
        self.log.close()


# --- the deployed project ------------------------------------------------------------------


class Deployment:
    """The baked project, built and released by its deploy/ scripts, its apps behind nginx."""

    def __init__(self, project: Path, venv: Path, env: dict[str, str], logs: Path):
        self.project, self.venv, self.env, self.logs = project, venv, env, logs
        self.apps: list[tuple[int, subprocess.Popen]] = []
        self.nginx: Nginx | None = None

    def script(self, name: str, timeout: float = 600) -> str:
        result = subprocess.run(
            [str(self.project / "deploy" / name)],
            cwd=self.logs,  # the scripts find the project themselves
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"deploy/{name} failed:\n{tail(result.stdout + result.stderr)}"
        return result.stdout

    def shell(self, code: str) -> dict:
        result = subprocess.run(
            [str(self.venv / "bin" / "python"), "manage.py", "shell", "--verbosity", "0", "-c", code],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, tail(result.stdout + result.stderr)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def direct_chat(self, first: str, second: str) -> int:
        spec = {"users": [first, second], "chats": [[first, second, []]], "password": DEMO_PASSWORD}
        made = self.shell(f"import json\nSPEC = {json.dumps(json.dumps(spec))}\n{SETUP_SCRIPT}")
        return made["chats"][f"{first}:{second}"]

    def start_app(self, port: int, **settings: str) -> subprocess.Popen:
        """deploy/start.sh on `port` (stopped with the deployment), with these settings changed."""
        log = (self.logs / f"app-{port}.log").open("ab")
        process = subprocess.Popen(
            [str(self.project / "deploy" / "start.sh")],
            env={**self.env, **settings, "PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.apps.append((port, process))
        try:
            tooling.wait_for_port(port, 60, process=process)
        except RuntimeError as exc:
            pytest.fail(f"deploy/start.sh did not serve ({exc}):\n{self.output()}", pytrace=False)
        return process

    def output(self) -> str:
        parts = [
            f"--- app {port}:\n{tail((self.logs / f'app-{port}.log').read_text(errors='replace'), 30)}"
            for port, _ in self.apps
        ]
        if self.nginx:
            parts.append(f"--- nginx:\n{self.nginx.output()}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self.nginx:
            self.nginx.stop()
        for _, process in self.apps:
            stop_process(process)


@pytest.fixture(scope="module")
def deployed(cookies_session, redis_url: str, postgres_url: str, tmp_path_factory, request) -> Deployment:
    """Bake, build, release, start two apps and nginx; all stopped (and the database dropped) after."""
    program("nginx")
    project = bake(cookies_session, **REDIS_POSTGRES)
    work = tmp_path_factory.mktemp("deploy")
    database = f"chat_deploy_{secrets.token_hex(4)}"
    env = served_env(
        DATABASE_URL=with_database(postgres_url, database),
        REDIS_URL=redis_database_of_this_worker(redis_url),
        BEHIND_TLS_PROXY="true",  # trust nginx's X-Forwarded-* headers, as in production
        ACCOUNT_RATE_LIMITS=f"login_ip={LOGIN_IP_LIMIT}/15m",
        VENV=str(work / "venv"),
        PYTHON=sys.executable,
    )
    admin = "import psycopg, sys; psycopg.connect(sys.argv[1], autocommit=True).execute(sys.argv[2])"
    deployment = Deployment(project, work / "venv", env, work)
    deployment.script("build.sh")
    python = str(deployment.venv / "bin" / "python")
    subprocess.run([python, "-c", admin, postgres_url, f'CREATE DATABASE "{database}"'], check=True, timeout=60)
    drop = f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'
    request.addfinalizer(lambda: subprocess.run([python, "-c", admin, postgres_url, drop], check=False, timeout=60))
    request.addfinalizer(deployment.stop)
    deployment.script("release.sh")
    for port in (free_port(), free_port()):
        deployment.start_app(port)
    listen = free_port()
    site = site_for_test(project, listen=listen, app_ports=[port for port, _ in deployment.apps])
    deployment.nginx = Nginx(work / "nginx", site, listen)
    return deployment


@pytest.fixture
def open_as(deployed, browser):
    """`open_as("ann")`: a page logged in through nginx, in a browser context of its own."""
    contexts = []

    def open_page(username: str) -> Page:
        context = browser.new_context(viewport=DESKTOP, base_url=deployed.nginx.base_url)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/chat/$"))
        page.wait_for_load_state("load")
        return page

    yield open_page
    for context in contexts:
        context.close()


class SocketWatch:
    """What a page's websockets do: which app process took each handshake (read from the
    X-Upstream-Addr header of nginx's 101 answer, through Chromium's DevTools protocol),
    the frames they send and receive, and which of them closed."""

    def __init__(self, page: Page):
        self.urls: dict[str, str] = {}
        self.upstreams: list[tuple[str, str]] = []
        self.opened, self.closed, self.sent, self.received = [], [], [], []
        cdp = page.context.new_cdp_session(page)
        cdp.on("Network.webSocketCreated", lambda event: self.urls.__setitem__(event["requestId"], event["url"]))
        cdp.on("Network.webSocketHandshakeResponseReceived", self.on_handshake)
        cdp.send("Network.enable")
        page.on("websocket", self.on_socket)

    def on_handshake(self, event: dict) -> None:
        headers = {name.lower(): value for name, value in event["response"]["headers"].items()}
        self.upstreams.append((self.urls.get(event["requestId"], ""), headers.get(UPSTREAM_HEADER, "")))

    def on_socket(self, ws) -> None:
        self.opened.append(ws.url)
        ws.on("close", lambda _: self.closed.append(ws.url))
        ws.on("framesent", lambda payload: self.sent.append((ws.url, frame_type(payload))))
        ws.on("framereceived", lambda payload: self.received.append((ws.url, frame_type(payload))))

    def room_upstream(self) -> str:
        rooms = [upstream for url, upstream in self.upstreams if ROOM_SOCKET.search(url)]
        assert rooms, f"no room socket handshake seen: {self.upstreams}"
        return rooms[-1]

    def count(self, frames: list[tuple[str, str]], kind: str, url_pattern: re.Pattern = ROOM_SOCKET) -> int:
        return sum(1 for url, found in frames if found == kind and url_pattern.search(url))


def frame_type(payload) -> str:
    try:
        return json.loads(payload).get("type", "")
    except (TypeError, ValueError, AttributeError):
        return ""


def open_room(page: Page, chat_id: int) -> SocketWatch:
    watch = SocketWatch(page)
    goto_with_socket(page, room_path(chat_id), f"/ws/chat/{chat_id}/")
    return watch


def wait_until(page: Page, expression: str, timeout: float) -> None:
    """Poll a JavaScript expression until it is true (wait_for_function would need the
    `unsafe-eval` the site's Content-Security-Policy refuses)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"not true within {timeout:g} s: {expression}"
        page.wait_for_timeout(200)


# --- through nginx, in a browser -----------------------------------------------------------


@pytest.mark.slow
def test_two_people_chat_live_through_nginx_each_on_another_app_process(deployed, open_as):
    chat_id = deployed.direct_chat("ann", "bob")
    ann = open_as("ann")
    ann_room = open_room(ann, chat_id).room_upstream()
    # nginx picks the process (least_conn, ties taken in turn); reopen Bob's room until it
    # lands on the other one, with a request between tries to move the turn on.
    for _ in range(10):
        bob = open_as("bob")
        bob_room = open_room(bob, chat_id).room_upstream()
        if bob_room != ann_room:
            break
        bob.context.close()
        urllib.request.urlopen(f"{deployed.nginx.base_url}/accounts/login/", timeout=15).close()
    assert bob_room != ann_room, f"both rooms stayed on {ann_room}:\n{deployed.output()}"
    app_ports = {f"{HOST}:{port}" for port, _ in deployed.apps[:2]}
    assert {ann_room, bob_room} == app_ports

    send(ann, "Hello from the first process")
    expect(bob.locator("main .bubble-body")).to_have_text(["Hello from the first process"])
    send(bob, "And back from the second")
    expect(ann.locator("main .bubble-body")).to_have_text(["Hello from the first process", "And back from the second"])


@pytest.mark.slow
def test_static_files_are_answered_by_nginx_from_static_root(deployed, open_as):
    deployed.direct_chat("cleo", "cody")
    page = open_as("cleo")
    static = []
    page.on("response", lambda response: "/static/" in response.url and static.append(response))
    page.reload()
    page.wait_for_load_state("load")
    kinds = {Path(response.url).suffix for response in static}
    assert {".css", ".js"} <= kinds, [response.url for response in static]
    root = deployed.project / "staticfiles"
    for response in static:
        assert response.status == 200, response.url
        headers = response.all_headers()
        assert UPSTREAM_HEADER not in headers, f"{response.url} went to an app process"
        name = response.url.split("/static/", 1)[1]
        assert (root / name).is_file(), f"{name} is not in STATIC_ROOT"
        if re.search(r"\.[0-9a-f]{12}\.\w+$", name):  # the pages link the hashed names
            assert headers["cache-control"] == HASHED_FILE_CACHE, response.url
    css = next(response for response in static if response.url.endswith(".css"))
    assert css.body() == (root / css.url.split("/static/", 1)[1]).read_bytes()


@pytest.mark.slow
def test_a_post_at_the_size_limit_is_taken_and_one_byte_more_is_413(deployed, open_as):
    chat_id = deployed.direct_chat("dora", "eli")
    dora = open_as("dora")
    goto_with_socket(dora, room_path(chat_id), f"/ws/chat/{chat_id}/")
    csrf = next(cookie["value"] for cookie in dora.context.cookies() if cookie["name"] == "csrftoken")
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-CSRFToken": csrf, "HX-Request": "true"}

    def post(size: int, client_id: str):
        fields = f"body=At+the+limit&client_id={client_id}&padding="
        body = fields + "x" * (size - len(fields))
        assert len(body.encode()) == size
        return dora.request.post(f"/chat/{chat_id}/send/", data=body, headers=headers)

    taken = post(BODY_LIMIT, "at-the-limit")
    assert taken.status == 200, taken.text()[:500]
    expect(dora.locator("main .bubble-body")).to_have_text(["At the limit"])

    refused = post(BODY_LIMIT + 1, "one-byte-over")
    assert refused.status == 413
    assert refused.text() == "That request is too large (at most 64 KB).\n"
    assert UPSTREAM_HEADER not in refused.headers, "nginx refused it; the app never saw it"


@pytest.mark.slow
def test_websocket_origins_are_checked_behind_nginx(deployed):
    """The app sees the browser's host and nginx's scheme: its own origin opens a socket; another
    origin, or a client claiming HTTPS through nginx, is refused."""
    pytest.importorskip("websockets")
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    member = deployed.shell(
        "import json\nfrom django.contrib.auth import get_user_model\nfrom benchmarks.tooling import forge_session\n"
        "user, _ = get_user_model().objects.get_or_create(username='finn', defaults={'email': 'finn@example.com'})\n"
        "print(json.dumps(forge_session(user)))"
    )
    url = f"ws://{HOST}:{deployed.nginx.port}/ws/chat/inbox/"
    own = deployed.nginx.base_url

    def handshake(origin: str, **headers: str) -> int:
        try:
            with connect(url, origin=origin, additional_headers={"Cookie": member["cookie"], **headers}) as ws:
                assert json.loads(ws.recv(timeout=15))["type"] == "inbox.sync"
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert handshake(own) == 101
    assert handshake("http://evil.example") == 403
    # nginx sets X-Forwarded-Proto itself: a client cannot claim HTTPS through it.
    assert handshake(own.replace("http://", "https://"), **{"X-Forwarded-Proto": "https"}) == 403


@pytest.mark.slow
def test_log_in_limits_count_the_address_nginx_saw_not_one_the_client_claims(deployed):
    """Failed log-ins through nginx, each claiming another X-Forwarded-For: nginx replaces the
    header with the address it saw, so the app counts them all against that one address (a
    loopback address of this test's own, so no other log-in counts with them)."""
    httpx = pytest.importorskip("httpx")
    source = f"127.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
    transport = httpx.HTTPTransport(local_address=source)
    statuses = []
    with httpx.Client(base_url=deployed.nginx.base_url, transport=transport, timeout=15) as client:
        for attempt in range(1, LOGIN_IP_LIMIT + 2):
            form = client.get("/accounts/login/").text
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
            answer = client.post(
                "/accounts/login/",
                data={"username": f"guess{attempt}", "password": "wrong", "csrfmiddlewaretoken": token},
                headers={"X-Forwarded-For": f"203.0.113.{attempt}"},
            )
            statuses.append(answer.status_code)
    assert statuses == [200] * LOGIN_IP_LIMIT + [429]


@pytest.mark.slow
def test_start_sh_trusts_forwarded_headers_only_behind_the_proxy(deployed):
    """Straight to an app port: a client's `X-Forwarded-Proto: https` makes the request secure
    (no redirect to HTTPS) only when the operator set BEHIND_TLS_PROXY: the server reads proxy
    headers only then (config/gunicorn.py), and Django's SECURE_PROXY_SSL_HEADER is set only then."""
    answers = {}
    for behind_proxy in ("false", "true"):
        port = free_port()
        process = deployed.start_app(port, BEHIND_TLS_PROXY=behind_proxy, SECURE_SSL_REDIRECT="true")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=15)
            # Servers read X-Forwarded-Proto only beside an X-Forwarded-For.
            claims = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
            connection.request("GET", "/accounts/login/", headers={"Host": HOST, **claims})
            answers[behind_proxy] = connection.getresponse().status
            connection.close()
        finally:
            stop_process(process)
    assert answers == {"false": 301, "true": 200}


@pytest.mark.slow
def test_release_and_scheduled_scripts_run_on_the_deployment(deployed):
    """deploy/release.sh again is a no-op; deploy/scheduled.sh runs every periodic command."""
    assert "No migrations to apply." in deployed.script("release.sh")
    chat_id = deployed.direct_chat("ivo", "jan")
    deployed.shell(  # both members delete the chat for themselves
        f"from chat import services\nfrom chat.models import Chat\nchat = Chat.objects.get(pk={chat_id})\n"
        "for membership in chat.memberships.select_related('user'):\n"
        "    services.soft_delete_chat(chat=chat, user=membership.user)\nprint('{}')"
    )
    output = deployed.script("scheduled.sh")
    assert f"Deleted 1 chat: {chat_id}" in output
    assert deployed.shell(f"from chat.models import Chat\nprint(Chat.objects.filter(pk={chat_id}).count())") == 0


@pytest.mark.slow
def test_a_quiet_room_behind_nginx_stays_connected_for_three_minutes(deployed, open_as):
    site = (deployed.project / "deploy" / "nginx-site.conf").read_text()
    assert re.search(r"^\s*proxy_read_timeout 60s;", site, re.MULTILINE), "the site's timeout is not 60 s any more"
    chat_id = deployed.direct_chat("gus", "hal")
    gus, hal = open_as("gus"), open_as("hal")
    gus_sockets, hal_sockets = open_room(gus, chat_id), open_room(hal, chat_id)
    opened = (list(gus_sockets.opened), list(hal_sockets.opened))

    gus.wait_for_timeout(IDLE_SECONDS * 1000)  # the quiet spell is what is tested

    for watch in (gus_sockets, hal_sockets):
        assert watch.closed == [], f"sockets closed while idle: {watch.closed}\n{deployed.output()}"
    assert (gus_sockets.opened, hal_sockets.opened) == opened, "a socket was reopened"
    # The page's heartbeat kept the room talking: a ping after each quiet spell, each answered.
    pings, pongs = gus_sockets.count(gus_sockets.sent, "ping"), gus_sockets.count(gus_sockets.received, "pong")
    print(f"{IDLE_SECONDS} s idle behind nginx (proxy_read_timeout 60s): 0 reconnects, {pings} pings, {pongs} pongs")
    assert pings >= IDLE_SECONDS // (HEARTBEAT_SECONDS + 10), gus_sockets.sent
    assert pongs >= pings - 1
    assert gus.evaluate(f"({ROOM_SOCKET_JS}).opens") == 1

    send(hal, "Still there after three quiet minutes?")
    expect(gus.locator("main .bubble-body")).to_have_text(["Still there after three quiet minutes?"])
    assert gus_sockets.closed == [] and hal_sockets.closed == []


# --- the other files, as far as the tools here check them ---------------------------------------


@pytest.mark.parametrize(
    "answers",
    [REDIS_POSTGRES, {"channel_layer": "in-memory", "database": "sqlite"}],
    ids=["redis-postgresql", "in-memory-sqlite"],
)
def test_nginx_accepts_the_site_of_each_option(cookies, tmp_path, answers):
    project = bake(cookies, **answers)
    ports = [8001, 8002] if answers["channel_layer"] == "redis" else [8001]
    site = site_for_test(project, listen=free_port(), app_ports=ports)
    checked = nginx_test(nginx_conf(tmp_path, site))
    assert checked.returncode == 0, checked.stderr
    upstream = re.search(r"upstream \w+ \{(.*?)\}", site, re.DOTALL).group(1)
    assert len(re.findall(r"^\s*server ", upstream, re.MULTILINE)) == len(ports)


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_systemd_units_verify(cookies, tmp_path, database):
    """`systemd-analyze verify` on the units, with /srv/<slug> pointing at the bake."""
    project = bake(cookies, channel_layer="redis", database=database)
    for unit in (project / "deploy" / "systemd").iterdir():
        (tmp_path / unit.name).write_text(unit.read_text().replace(f"/srv/{SLUG}", str(project)))
    units = [f"{SLUG}-app@8001.service", f"{SLUG}-app.target", f"{SLUG}-scheduled.service", f"{SLUG}-scheduled.timer"]
    result = subprocess.run(
        [program("systemd-analyze"), "verify", "--man=no", *(f"./{unit}" for unit in units)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def test_deploy_scripts_pass_shellcheck(cookies):
    project = bake(cookies, **REDIS_POSTGRES)
    scripts = sorted((project / "deploy").glob("*.sh"))
    assert {script.name for script in scripts} == {"build.sh", "release.sh", "scheduled.sh", "start.sh"}
    assert all(os.access(script, os.X_OK) for script in scripts), "the bake keeps the scripts executable"
    result = subprocess.run(
        [program("shellcheck"), *map(str, scripts)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("answers", "services"),
    [
        (REDIS_POSTGRES, {"nginx", "release", "app1", "app2", "redis", "postgres"}),
        ({"channel_layer": "in-memory", "database": "sqlite"}, {"nginx", "release", "app1"}),
    ],
    ids=["redis-postgresql", "in-memory-sqlite"],
)
def test_dockerfile_and_compose_use_the_scripts_ci_runs(cookies, answers, services):
    project = bake(cookies, **answers)
    dockerfile = (project / "deploy" / "Dockerfile").read_text()
    assert "RUN deploy/build.sh" in dockerfile
    assert 'CMD ["deploy/start.sh"]' in dockerfile
    assert f"COPY deploy/nginx-site.conf /etc/nginx/conf.d/{SLUG}.conf" in dockerfile
    compose = yaml.safe_load((project / "deploy" / "compose.yaml").read_text())
    assert set(compose["services"]) == services
    assert compose["services"]["release"]["command"] == ["deploy/release.sh"]
    site = (project / "deploy" / "nginx-site.conf").read_text()
    for number, name in enumerate(sorted(name for name in services if name.startswith("app")), start=1):
        app = compose["services"][name]
        assert app["network_mode"] == "service:nginx"
        assert app["environment"]["PORT"] == f"800{number}"
        assert f"server 127.0.0.1:800{number};" in site  # the site's upstream, used as it is
        assert app["depends_on"]["release"]["condition"] == "service_completed_successfully"
        assert app["stop_grace_period"] == "25s"  # past gunicorn's own kill: GRACEFUL_TIMEOUT + 10 s
        url = app["environment"]["DATABASE_URL"]
        assert url.startswith("postgres://") == (answers["database"] == "postgresql")
        assert ("REDIS_URL" in app["environment"]) == (answers["channel_layer"] == "redis")


@pytest.mark.slow
def test_a_socket_that_stops_answering_is_dropped_and_reconnected(deployed, open_as):
    """nginx frozen: the room's socket looks open but nothing comes back. The unanswered ping
    drops it ("Connection lost" shows); once nginx answers again the page reconnects and
    gets messages live."""
    chat_id = deployed.direct_chat("kai", "lou")
    kai = open_as("kai")
    open_room(kai, chat_id)
    hint = kai.locator("main [data-connection-status]")
    expect(hint).to_be_hidden()
    deployed.nginx.pause()
    try:
        # Both sockets (room and inbox) give up within a heartbeat and the wait for its pong.
        given_up = f"!({ROOM_SOCKET_JS}).isOpen() && !window.chatInboxSocket.isOpen()"
        wait_until(kai, given_up, timeout=HEARTBEAT_SECONDS + 10 + 20)
        expect(hint).to_be_visible()
    finally:
        deployed.nginx.resume()
    expect(hint).to_be_hidden(timeout=30_000)
    assert kai.evaluate(f"[({ROOM_SOCKET_JS}).opens, window.chatInboxSocket.opens]") == [2, 2]
    deployed.shell(
        "from django.contrib.auth import get_user_model\nfrom chat import services\nfrom chat.models import Chat\n"
        f"services.send_message(chat=Chat.objects.get(pk={chat_id}), "
        "sender=get_user_model().objects.get(username='lou'), body='Back again')\nprint('{}')"
    )
    expect(kai.locator("main .bubble-body")).to_have_text(["Back again"])
