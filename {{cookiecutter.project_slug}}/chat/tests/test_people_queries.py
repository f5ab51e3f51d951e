"""Muted chats and blocked people cost no queries of their own: the inbox with muted chats
and the room with a blocked person's messages run as many queries as without."""

import pytest
from django.urls import reverse

from chat import services
from chat.models import Membership
from chat.tests.test_views_queries import HTMX, add_chats, count_queries


@pytest.mark.parametrize(("url_name", "headers"), [("chat:list", {}), ("chat:widget", HTMX)])
def test_the_inbox_runs_as_many_queries_with_muted_chats(alice_client, alice, url_name, headers):
    add_chats(alice, 10, messages_per_chat=5)
    url = reverse(url_name)
    unmuted = count_queries(alice_client, url, headers=headers)

    Membership.objects.filter(user=alice).update(is_muted=True)

    assert count_queries(alice_client, url, headers=headers) == unmuted


@pytest.mark.parametrize("url_name", ["chat:room", "chat:widget_room"])
def test_the_room_runs_as_many_queries_with_a_blocked_persons_messages(alice_client, alice, url_name):
    group = add_chats(alice, 2, messages_per_chat=60)[1]
    other = Membership.objects.exclude(user=alice).get(chat=group).user
    url = reverse(url_name, args=[group.pk])
    count_queries(alice_client, url, headers=HTMX)  # the first opening marks the chat read
    before = count_queries(alice_client, url, headers=HTMX)

    services.block_user(blocker=alice, blocked=other)

    assert count_queries(alice_client, url, headers=HTMX) == before
