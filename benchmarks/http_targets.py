"""Print, as JSON, what the HTTP and idle-socket benchmarks request from a seeded project.

Runs inside a baked project (its venv, its directory as working directory, its settings):
logged-in sessions for the benchmark user and a few others (with a room of each, for idle room
sockets), and the URLs of each page.
The room, "Load older" and send use the benchmark user's longest chat, as bench_pages.py does.
"""

from __future__ import annotations

import json
import os
import sys

BENCHMARK_USER = sys.argv[1] if len(sys.argv) > 1 else "alice"
OTHER_SESSIONS = 50


def main() -> None:
    sys.path.insert(0, os.getcwd())
    import django

    django.setup()
    from benchmarks.tooling import forge_session  # the project's own: a session and a CSRF secret
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
    sessions = [forge_session(other) for other in others]
    # A room of each of them, for idle room sockets (None for someone in no chat).
    rooms = {m.user_id: m.chat_id for m in Membership.objects.filter(user__in=others).order_by("-chat_id")}
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
                "session": forge_session(user),
                "other_sessions": sessions,
                "room_sessions": [
                    {**session, "path": f"/ws/chat/{rooms[session['user_id']]}/"}
                    for session in sessions
                    if session["user_id"] in rooms
                ],
                "targets": targets,
            }
        )
    )


if __name__ == "__main__":
    main()
