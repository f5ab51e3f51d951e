"""The inbox, widget list, room and load-older run a fixed number of queries: the same for
5 chats as for 50 chats with many messages each."""

import itertools
import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat.models import Chat, Membership, Message

HTMX = {"HX-Request": "true"}
MESSAGES_PER_CHAT = 60
_names = itertools.count(1)


def add_chats(user, count: int, messages_per_chat: int = MESSAGES_PER_CHAT) -> list[Chat]:
    """Direct and group chats for `user` (alternating), each with history and unread messages,
    built with bulk inserts."""
    User = get_user_model()
    numbers = [next(_names) for _ in range(count)]
    others = User.objects.bulk_create(
        [User(username=f"peer{n}", email=f"peer{n}@example.com", first_name=f"Peer {n}") for n in numbers]
    )
    if not others[0].pk:  # backends without RETURNING
        others = list(User.objects.filter(username__in=[f"peer{n}" for n in numbers]).order_by("pk"))
    chats = Chat.objects.bulk_create(
        [
            Chat(kind="direct", direct_key=f"{min(user.pk, o.pk)}:{max(user.pk, o.pk)}")
            if i % 2 == 0
            else Chat(kind="group", name=f"Group {o.pk}", created_by=user)
            for i, o in enumerate(others)
        ]
    )
    Membership.objects.bulk_create(
        [Membership(chat=chat, user=user, role="admin", unread_count=3) for chat in chats]
        + [Membership(chat=chat, user=other) for chat, other in zip(chats, others, strict=True)]
    )
    Message.objects.bulk_create(
        [
            Message(chat=chat, sender=user if n % 2 else other, body=f"message {n} in {chat.pk}")
            for chat, other in zip(chats, others, strict=True)
            for n in range(messages_per_chat)
        ]
    )
    for chat in chats:
        chat.last_message = Message.objects.filter(chat=chat).order_by("-pk").first()
    Chat.objects.bulk_update(chats, ["last_message"])
    return chats


def count_queries(client, url, **extra) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, **extra)
    assert response.status_code == 200
    return len(queries)


@pytest.fixture
def alice_chats(alice):
    """alice in 5 chats; the tests add 45 more."""
    return add_chats(alice, 5, messages_per_chat=10)


@pytest.mark.parametrize(
    ("url_name", "headers"),
    [("chat:list", {}), ("chat:list_partial", HTMX), ("chat:widget", HTMX), ("chat:widget", {})],
)
def test_inbox_and_widget_list_queries_do_not_grow_with_chats(
    alice_client, alice, alice_chats, url_name, headers, django_assert_max_num_queries
):
    url = reverse(url_name)
    with_5 = count_queries(alice_client, url, headers=headers)

    add_chats(alice, 45)

    with django_assert_max_num_queries(with_5):
        response = alice_client.get(url, headers=headers)
    assert response.content.decode().count("data-chat-row") == 50


@pytest.mark.parametrize("kind_index", [0, 1], ids=["direct", "group"])
@pytest.mark.parametrize("url_name", ["chat:room", "chat:widget_room"])
def test_room_queries_do_not_grow_with_chats_or_history(
    alice_client, alice, alice_chats, url_name, kind_index, django_assert_num_queries
):
    few = count_queries(alice_client, reverse(url_name, args=[alice_chats[kind_index].pk]), headers=HTMX)

    long_chat = add_chats(alice, 45, messages_per_chat=150)[kind_index]

    with django_assert_num_queries(few):
        response = alice_client.get(reverse(url_name, args=[long_chat.pk]), headers=HTMX)
    assert response.content.decode().count("data-message-id=") == 50


def test_load_older_queries_do_not_grow_with_history(alice_client, alice, alice_chats, django_assert_num_queries):
    short = alice_chats[0]
    oldest_but_one = Message.objects.filter(chat=short).order_by("pk")[1]
    few = count_queries(alice_client, reverse("chat:messages", args=[short.pk]) + f"?before={oldest_but_one.pk}")

    long_chat = add_chats(alice, 45, messages_per_chat=150)[0]
    middle = Message.objects.filter(chat=long_chat).order_by("pk")[100]

    with django_assert_num_queries(few):
        response = alice_client.get(reverse("chat:messages", args=[long_chat.pk]) + f"?before={middle.pk}")
    assert response.content.decode().count("data-message-id=") == 50


# --- replies and @mentions --------------------------------------------------------------


def reply_and_mention_everywhere(chat, members) -> None:
    """Each message of the chat replies to the one before it and @mentions every member:
    the quotes and highlights must come with the page's own queries."""
    messages = list(Message.objects.filter(chat=chat).order_by("pk"))
    for previous, message in zip(messages, messages[1:], strict=False):
        message.reply_to = previous
        message.body = " ".join(f"@{member.username}" for member in members) + " " + message.body
        position, message.mentions = 0, []
        for member in members:
            message.mentions.append([position, position + 1 + len(member.username), member.pk])
            position += len(member.username) + 2
    Message.objects.bulk_update(messages, ["reply_to", "body", "mentions"])
    Membership.objects.filter(chat=chat).update(last_mention_message_id=messages[-1].pk, last_read_message_id=0)


@pytest.mark.parametrize("url_name", ["chat:room", "chat:widget_room"])
def test_room_queries_do_not_grow_with_replies_and_mentions(
    alice_client, alice, alice_chats, url_name, django_assert_num_queries
):
    group = add_chats(alice, 2)[1]  # 60 messages: a full page of 50
    url = reverse(url_name, args=[group.pk])
    plain = count_queries(alice_client, url, headers=HTMX)
    members = [m.user for m in Membership.objects.filter(chat=group).select_related("user")]

    reply_and_mention_everywhere(group, members)

    with django_assert_num_queries(plain):
        response = alice_client.get(url, headers=HTMX)
    page = response.content.decode()
    assert page.count("data-message-id=") == 50
    assert page.count("data-reply-quote") == 50
    assert page.count('class="mention mention--me"') == 50


def test_inbox_queries_do_not_grow_with_mentions(alice_client, alice, alice_chats, django_assert_num_queries):
    url = reverse("chat:list")
    plain = count_queries(alice_client, url)

    for chat in alice_chats:
        reply_and_mention_everywhere(chat, [alice])

    with django_assert_num_queries(plain):
        response = alice_client.get(url)
    marks = re.findall(r"<span[^>]*data-chat-mention[^>]*>", response.content.decode())
    assert len(marks) == 5
    assert not [mark for mark in marks if "hidden" in mark]


# --- message changes: reactions and edits add no queries ---------------------------------


def react_and_edit_everything(chat: Chat, people) -> None:
    """Every message of `chat` edited, with two reactions from each of `people`."""
    from django.utils import timezone

    from chat.models import Reaction

    messages = list(Message.objects.filter(chat=chat))
    Reaction.objects.bulk_create(
        [Reaction(message=m, user=person, emoji=emoji) for m in messages for person in people for emoji in ("👍", "🎉")]
    )
    Message.objects.filter(chat=chat).update(edited_at=timezone.now(), change_seq=1)


@pytest.mark.parametrize("url_name", ["chat:room", "chat:widget_room"])
def test_room_queries_are_the_same_with_reactions_and_edits_on_every_message(
    alice_client, alice, url_name, django_assert_num_queries
):
    plain, changed = (add_chats(alice, 2, messages_per_chat=50)[1] for _ in range(2))  # two groups
    untouched = count_queries(alice_client, reverse(url_name, args=[plain.pk]), headers=HTMX)
    react_and_edit_everything(changed, [m.user for m in changed.memberships.select_related("user")])

    with django_assert_num_queries(untouched):
        response = alice_client.get(reverse(url_name, args=[changed.pk]), headers=HTMX)
    html = response.content.decode()
    assert (html.count("data-reactor-ids="), html.count('class="bubble-edited"')) == (100, 50)


def test_changed_since_queries_do_not_grow_with_the_changes(alice_client, alice, django_assert_num_queries):
    few, many = add_chats(alice, 2, messages_per_chat=5)[1], add_chats(alice, 2, messages_per_chat=50)[1]
    for chat in (few, many):
        react_and_edit_everything(chat, [alice])
    with_few = count_queries(alice_client, reverse("chat:messages", args=[few.pk]) + "?changed_since=0")

    with django_assert_num_queries(with_few):
        response = alice_client.get(reverse("chat:messages", args=[many.pk]) + "?changed_since=0")
    assert response.content.decode().count("data-message-id=") == 50
