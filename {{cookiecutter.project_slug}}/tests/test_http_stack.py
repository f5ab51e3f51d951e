"""The HTTP side of config/asgi.py: how often a request crosses between the server's event
loop and a thread.

Each crossing waits for the event loop to come round, which on a server busy delivering
frames takes milliseconds; a page that crossed 17 times spent most of its time waiting.
"""

import asyncio

import pytest
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.contrib.auth import get_user_model

from chat.tests.asgi_http import over_asgi
from config.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

# Django's own, which no middleware order removes: its request_started and request_finished
# signals, the stack's one trip to the request's thread, CSRF's check of the view, the view.
CROSSINGS_OF_A_PAGE = 5


async def test_a_page_runs_its_middleware_on_its_thread_in_one_crossing(client, monkeypatch):
    """The last middleware is sync-only, so Django runs every one above it on the request's
    thread in one go. Were it async-capable, each of theirs would run in async mode: a
    crossing to the thread and back for every hook (17 in all for the inbox page)."""
    user = await get_user_model().objects.acreate(username="ines", email="ines@example.com")
    await asyncio.to_thread(client.force_login, user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()
    crossings = 0
    cross = SyncToAsync.__call__

    def counted(self, *args, **kwargs):
        nonlocal crossings
        crossings += 1
        return cross(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)

    status, _, _ = await over_asgi(application, "GET", "/chat/", [(b"cookie", cookie)])

    assert status == 200
    assert crossings <= CROSSINGS_OF_A_PAGE
