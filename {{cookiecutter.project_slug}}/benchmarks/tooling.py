"""What a benchmark or a test needs to run this project on 127.0.0.1: ports, servers, sessions.

- `free_port()` and `wait_for_port()`;
- `ServerProcess`: one app server process serving an ASGI application on a free port, its
  output in a log file, stopped gently (SIGTERM, as a deploy does) or killed, and measured
  (RSS); `server="gunicorn"` (the production server, config/gunicorn.py) or `"daphne"`;
- `forge_session(user)`: what `login()` would leave in the session store, plus a CSRF
  secret, so a client can act as that user without a password or an HTTP round trip;
  `forge_sessions(users)` does it for thousands in one bulk insert.

Only the standard library at import time (Django is imported inside `forge_session`), so a
script outside the project can load this file too.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from datetime import timedelta
from pathlib import Path

HOST = "127.0.0.1"
PROJECT_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def port_is_open(port: int) -> bool:
    with suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def wait_for_port(port: int, timeout: float = 30, *, process: subprocess.Popen | None = None) -> None:
    """Return once something listens on the port; RuntimeError after `timeout` s or if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process for {HOST}:{port} exited with {process.returncode}")
        if port_is_open(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout:g} s")


def raise_open_files_limit() -> None:
    """Soft open-files limit up to the hard one: thousands of sockets need thousands of descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


SERVERS = ("gunicorn", "daphne")
# Connections the kernel holds for the server until it accepts them. daphne's -b/-p listen
# with Twisted's 50: a burst of hundreds of connections on a busy process overflows that,
# and the kernel drops the overflow after its SYN-ACK retries (a reset, a minute later).
# gunicorn's default, 2048, is the production server's.
DAPHNE_BACKLOG = 2048


def server_command(server: str, *, python: str, port: int, application: str) -> list[str]:
    """The command line of one app process on HOST:port."""
    if server == "daphne":
        endpoint = f"tcp:port={port}:interface={HOST}:backlog={DAPHNE_BACKLOG}"
        return [python, "-m", "daphne", "-e", endpoint, application]
    if server == "gunicorn":  # as `make serve-prod`, on this port
        return [python, "-m", "gunicorn", "-c", "python:config.gunicorn", "--bind", f"{HOST}:{port}", application]
    raise ValueError(f"unknown server {server!r}: daphne or gunicorn")


class ServerProcess:
    """One app server process on 127.0.0.1; `wait_ready()` before use, `stop()` or `kill()` after."""

    def __init__(
        self,
        *,
        log_path: Path,
        env: dict[str, str],
        application: str = "config.asgi:application",
        project_dir: Path = PROJECT_DIR,
        python: str = sys.executable,
        port: int | None = None,
        server: str = "daphne",
    ):
        self.port = port or free_port()
        self.server, self.log_path = server, log_path
        self.log = log_path.open("ab")
        command = server_command(server, python=python, port=self.port, application=application)
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            command,
            cwd=project_dir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_open_files_limit,  # noqa: PLW1509 - only sets an rlimit
            process_group=0,  # gunicorn's worker goes with its arbiter when killed
        )

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def wait_ready(self, timeout: float = 30) -> None:
        try:
            wait_for_port(self.port, timeout, process=self.process)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{self.server} did not start ({exc}); its log:\n{self.output()}") from None

    def output(self, lines: int = 60) -> str:
        """The end of the server's log."""
        if not self.log.closed:
            self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def rss_kib(self) -> int:
        """Resident memory of the process and its children (gunicorn's worker), in KiB."""
        return sum(rss_kib(pid) for pid in (self.process.pid, *child_pids(self.process.pid)))

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the process and its children (gunicorn's worker) so far."""
        return sum(cpu_seconds(pid) for pid in (self.process.pid, *child_pids(self.process.pid)))

    def kill(self) -> None:
        """SIGKILL to the whole process group: nothing gets a chance to close its sockets or clean up."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM, as a deploy or systemd sends it: the server shuts down gracefully."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process, from /proc (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            # The parent's pid is the field after the command name, which is in parentheses.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def forge_session(user) -> dict:
    """A logged-in session for `user` and a CSRF secret: {"user_id", "cookie", "csrf"}.

    `cookie` is a Cookie header carrying both; send `csrf` as the form's
    csrfmiddlewaretoken (or the X-CSRFToken header) with every POST.
    """
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.utils.crypto import get_random_string

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = user._meta.pk.value_to_string(user)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    csrf = get_random_string(32)  # a CSRF secret: the cookie and the token carry the same value
    cookie = f"{settings.SESSION_COOKIE_NAME}={store.session_key}; {settings.CSRF_COOKIE_NAME}={csrf}"
    return {"user_id": user.pk, "cookie": cookie, "csrf": csrf}


def forge_sessions(users) -> list[dict]:
    """`forge_session` for many users at once: one bulk insert where sessions live in the database."""
    from importlib import import_module

    from django.conf import settings

    engine = import_module(settings.SESSION_ENGINE)
    if not hasattr(engine.SessionStore, "create_model_instance"):  # cache or cookie sessions
        return [forge_session(user) for user in users]
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.base import VALID_KEY_CHARS
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    forged, rows = [], []
    model = engine.SessionStore.get_model_class()
    expire_date = timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE)
    for user in users:
        data = {
            SESSION_KEY: user._meta.pk.value_to_string(user),
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        key = get_random_string(32, VALID_KEY_CHARS)  # as the store makes them (without a query per key)
        rows.append(model(session_key=key, session_data=engine.SessionStore().encode(data), expire_date=expire_date))
        csrf = get_random_string(32)
        cookie = f"{settings.SESSION_COOKIE_NAME}={key}; {settings.CSRF_COOKIE_NAME}={csrf}"
        forged.append({"user_id": user.pk, "cookie": cookie, "csrf": csrf})
    model.objects.bulk_create(rows, batch_size=500)
    return forged
