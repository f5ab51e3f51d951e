"""A baked project served by daphne on 127.0.0.1, for tests that drive a real browser.

The project is the default bake (SQLite, in-memory channel layer, widget on), run from the
shared venv of its dependency set (see project_venvs.py), migrated and seeded with
seed_chat_data. Each instance picks its own free port and directory, so xdist workers
never collide; `restart()` reuses the port so open pages can reconnect.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from baking import clean_env, load_project_module, run_cookiecutter, stop_process, tail
from project_venvs import venv_for

tooling = load_project_module("tooling")  # ports and processes, shared with the project

DEMO_PASSWORD = "chat-demo-password"  # seed_chat_data's DEMO_PASSWORD

# Runs in `manage.py shell`: users with the demo password, and (optionally) direct chats
# with messages. Prints {"users": {name: pk}, "chats": {"a:b": pk}} as JSON.
SETUP_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from chat import services
spec = json.loads(SPEC)
User = get_user_model()
users = {}
for name in spec["users"]:
    user, created = User.objects.get_or_create(
        username=name, defaults={"email": f"{name}@example.com", "first_name": name.title()}
    )
    if created:  # a new password on an existing user would log out its open sessions
        user.set_password(spec["password"])
        user.save()
    users[name] = user
chats = {}
for sender, receiver, bodies in spec["chats"]:
    chat, _ = services.get_or_create_direct_chat(user=users[sender], other=users[receiver])
    for body in bodies:
        services.send_message(chat=chat, sender=users[sender], body=body)
    chats[f"{sender}:{receiver}"] = chat.pk
print(json.dumps({"users": {name: user.pk for name, user in users.items()}, "chats": chats}))
"""

# The seeded chat of one user with the most messages: its id and message ids, oldest first.
LONGEST_CHAT_SCRIPT = """
from django.contrib.auth import get_user_model
from django.db.models import Count
from chat.models import Chat, Message
user = get_user_model().objects.get(username=USERNAME)
chat = Chat.objects.filter(memberships__user=user).annotate(n=Count("messages")).order_by("-n").first()
ids = list(Message.objects.filter(chat=chat).order_by("id").values_list("id", flat=True))
print(json.dumps({"chat_id": chat.pk, "message_ids": ids}))
"""


class ServedProject:
    def __init__(self, workdir: Path, *, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.port = tooling.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {"DEBUG": "true", **(env or {})}
        self.process: subprocess.Popen | None = None
        self.log = workdir / "daphne.log"
        self.path = self.bake()
        self.venv = venv_for(self.path)

    def bake(self) -> Path:
        output = self.workdir / "out"
        result = run_cookiecutter("setup_environment=false", output_dir=output)
        assert result.returncode == 0, tail(result.stdout + result.stderr)
        return output / "chat_project"

    def manage(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [str(self.venv / "bin" / "python"), "manage.py", *args],
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(**self.env),
            check=False,
        )
        assert result.returncode == 0, f"manage.py {args[0]} failed:\n{tail(result.stdout + result.stderr)}"
        return result.stdout

    def shell(self, code: str, **values) -> dict:
        """Run Python in `manage.py shell`; `values` become JSON-decoded globals; returns its JSON output."""
        prelude = "import json\n" + "".join(
            f"{name} = json.loads({json.dumps(json.dumps(v))})\n" for name, v in values.items()
        )
        output = self.manage("shell", "--verbosity", "0", "-c", prelude + code)
        return json.loads(output.strip().splitlines()[-1])

    def set_up(self, *, users: list[str], chats: list[tuple[str, str, list[str]]] = ()) -> dict:
        spec = {"users": users, "chats": [list(chat) for chat in chats], "password": DEMO_PASSWORD}
        return self.shell(SETUP_SCRIPT, SPEC=json.dumps(spec))

    def send(self, *, sender: str, receiver: str, bodies: list[str]) -> None:
        """Send direct messages from outside the server (its sockets hear nothing of them)."""
        self.set_up(users=[sender, receiver], chats=[(sender, receiver, bodies)])

    def longest_chat(self, username: str) -> dict:
        return self.shell(LONGEST_CHAT_SCRIPT, USERNAME=username)

    def start(self) -> None:
        with self.log.open("a") as log_file:
            self.process = subprocess.Popen(
                # `-m daphne`, as the project's benchmarks start it: a shared venv's console
                # scripts name the interpreter of the tree that built it, which may be gone.
                tooling.server_command(
                    "daphne",
                    python=str(self.venv / "bin" / "python"),
                    port=self.port,
                    application="config.asgi:application",
                ),
                cwd=self.path,
                env=clean_env(**self.env),
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self.wait_until_serving()

    def wait_until_serving(self, deadline: float = 60) -> None:
        try:
            tooling.wait_for_port(self.port, deadline, process=self.process)
        except RuntimeError as exc:
            raise AssertionError(f"daphne did not serve ({exc}):\n{tail(self.log.read_text())}") from None

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process(self.process)
        self.process = None
