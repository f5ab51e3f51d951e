"""Print, as JSON, what the HTTP and idle-socket benchmarks request from a seeded project.

Runs inside a baked project (its venv, its directory as working directory, its settings):
logged-in sessions for the benchmark user and a few others, and the URLs of each page.
The room, "Load older" and send use the benchmark user's longest chat, as bench_pages.py does.
"""

from __future__ import annotations

import json
import os
import sys
from importlib import import_module

BENCHMARK_USER = sys.argv[1] if len(sys.argv) > 1 else "alice"
OTHER_SESSIONS = 50


def session_for(user) -> dict[str, str]:
    """What `login()` would leave: a session and a CSRF secret, as a Cookie header."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.utils.crypto import get_random_string

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = user._meta.pk.value_to_string(user)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    csrf = get_random_string(32)
    return {
        "cookie": f"{settings.SESSION_COOKIE_NAME}={store.session_key}; {settings.CSRF_COOKIE_NAME}={csrf}",
        "csrf": csrf,
    }


def main() -> None:
    sys.path.insert(0, os.getcwd())
    import django

    django.setup()
    from chat import selectors
    from chat.models import Chat, Membership, Message
    from django.contrib.auth import get_user_model
    from django.contrib.staticfiles.storage import staticfiles_storage
    from django.db.models import Count
    from django.urls import reverse

    users = get_user_model().objects
    user = users.get(username=BENCHMARK_USER)
    longest = (
        Chat.objects.filter(memberships__user=user)
        .annotate(size=Count("messages"))
        .order_by("-size")
        .values_list("pk", flat=True)
        .first()
    )
    newest_page = selectors.messages_page(membership=selectors.membership_or_404(user=user, chat_id=longest))
    others = users.exclude(pk=user.pk).order_by("pk")[:OTHER_SESSIONS]
    targets = {
        "login": {"method": "GET", "path": reverse("login"), "auth": False},
        "static": {"method": "GET", "path": staticfiles_storage.url("css/chat.css"), "auth": False},
        "inbox": {"method": "GET", "path": reverse("chat:list")},
        "room": {"method": "GET", "path": reverse("chat:room", args=[longest])},
        "load-older": {
            "method": "GET",
            "path": f"{reverse('chat:messages', args=[longest])}?before={newest_page.oldest_id}",
            "htmx": True,
        },
        "widget-list": {"method": "GET", "path": reverse("chat:widget"), "htmx": True},
        "send": {"method": "POST", "path": reverse("chat:send", args=[longest]), "htmx": True},
    }
    print(
        json.dumps(
            {
                "user": BENCHMARK_USER,
                "user_chats": Membership.objects.filter(user=user).count(),
                "messages": Message.objects.count(),
                "session": session_for(user),
                "other_sessions": [session_for(other) for other in others],
                "targets": targets,
            }
        )
    )


if __name__ == "__main__":
    main()
