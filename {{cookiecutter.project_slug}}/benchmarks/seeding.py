"""The fan-out benchmark's throwaway project state: settings, database, members and rooms.

The benchmark process seeds with Django in-process (`setup_django`, then `seed`) on the
same database and settings (`server_env`) its server processes then serve.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .room_client import Member
from .tooling import HOST, PROJECT_DIR, forge_session, forge_sessions


@dataclass(frozen=True)
class Seed:
    members: list[Member]
    chat_ids: list[int]


@dataclass(frozen=True)
class Room:
    chat_id: int
    members: list[Member]


def server_env(*, database_url: str | None, workdir: Path, redis_url: str | None, prefix: str) -> dict[str, str]:
    """A DEBUG-off environment that serves plain HTTP on 127.0.0.1 only (benchmarks.settings)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        "DEBUG": "false",
        "ALLOWED_HOSTS": HOST,
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "0",
        "DATABASE_URL": database_url or f"sqlite:///{workdir / 'bench.sqlite3'}",
        "BENCH_LAYER_PREFIX": prefix,
        "PYTHONPATH": str(PROJECT_DIR),
    }
    env.pop("BENCH_REDIS_URL", None)
    if redis_url:
        env["BENCH_REDIS_URL"] = redis_url
    return env


def setup_django(env: dict[str, str]) -> None:
    """Django in this process, on the same database as the servers; migrated."""
    os.environ.update({name: value for name, value in env.items() if name != "BENCH_REDIS_URL"})
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def seed(*, run_id: str, members: int, rooms: int) -> Seed:
    """`members` users in `rooms` group chats, each member with a logged-in session."""
    from chat import services

    users = create_users(run_id, members)
    chat_ids = [
        services.create_group_chat(creator=users[0], name=f"Bench {run_id} {n}", members=users[1:]).pk
        for n in range(rooms)
    ]
    return Seed(members=[Member(**forge_session(user)) for user in users], chat_ids=chat_ids)


def seed_rooms(*, run_id: str, users: int, room_size: int) -> list[Room]:
    """`users` people in rooms of `room_size` (each in one), logged in: bulk inserts, seconds for thousands."""
    from chat import services

    people = create_users(run_id, users)
    members = [Member(**forged) for forged in forge_sessions(people)]
    rooms = []
    for start in range(0, users, room_size):
        group = people[start : start + room_size]
        chat = services.create_group_chat(creator=group[0], name=f"Bench {run_id} {start // room_size}", members=group)
        rooms.append(Room(chat_id=chat.pk, members=members[start : start + room_size]))
    return rooms


def create_users(run_id: str, count: int) -> list:
    """`count` users in one insert, in their creation order (no password: sessions are forged)."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    names = [f"bench-{run_id}-{number:05d}" for number in range(count)]
    users = [User(username=name, email=f"{name}@example.com", first_name=f"Member {n}") for n, name in enumerate(names)]
    for user in users:
        user.set_unusable_password()
    User.objects.bulk_create(users, batch_size=500)
    return list(User.objects.filter(username__in=names).order_by("pk"))


def stored_twice(chat_id: int, prefix: str) -> int:
    """Messages of the room whose body (starting with `prefix`) was stored more than once:
    each offered message's body is its own, so a retried send stored again would show here."""
    from django.db.models import Count

    from chat.models import Message

    bodies = Message.objects.filter(chat_id=chat_id, body__startswith=prefix).values("body")
    copies = bodies.annotate(copies=Count("pk")).filter(copies__gt=1).values_list("copies", flat=True)
    return sum(count - 1 for count in copies)
