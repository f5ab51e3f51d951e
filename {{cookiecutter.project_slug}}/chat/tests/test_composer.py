"""Replies, the typing indicator and @mentions: services, pages and socket frames.

Socket tests run on the in-memory layer and, with REDIS_URL, on Redis (the `connect`
fixture of test_consumers).
"""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.core.exceptions import ValidationError
from django.urls import reverse

from chat import services
from chat.models import Membership, Message
from chat.realtime import consumers
from chat.tests import test_consumers
from chat.tests.test_consumers import expect_close, receive_until

channel_layer = test_consumers.channel_layer
connect = test_consumers.connect
fast_debounce = test_consumers.fast_debounce

HTMX = {"HX-Request": "true"}


def send_frame(client_id, body, **extra):
    return json.dumps({"type": "send", "client_id": client_id, "body": body, **extra})


def post_send(client, chat, body, **fields):
    return client.post(reverse("chat:send", args=[chat.pk]), {"body": body, **fields}, headers=HTMX)


# --- replies --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_reply_keeps_its_original_and_shows_a_quote_of_its_first_line(alice_client, alice, bob, group_chat):
    original = services.send_message(chat=group_chat, sender=bob, body="First line\nsecond line")

    response = post_send(alice_client, group_chat, "Agreed", reply_to=original.pk, client_id="r-1")

    assert response.status_code == 200
    reply = Message.objects.get(client_id="r-1")
    assert reply.reply_to_id == original.pk
    page = alice_client.get(reverse("chat:room", args=[group_chat.pk])).content.decode()
    quote = page.split(f'data-reply-to="{original.pk}"', 1)[1].split("</a>", 1)[0]
    assert "Bob" in quote
    assert "First line" in quote
    assert "second line" not in quote
    assert f'href="#message-{original.pk}"' in page


@pytest.mark.django_db
def test_a_reply_to_a_message_in_another_chat_is_refused(alice_client, alice, bob, group_chat, direct_chat):
    elsewhere = services.send_message(chat=direct_chat, sender=bob, body="private")

    with pytest.raises(ValidationError, match="only reply to a message in this chat"):
        services.send_message(chat=group_chat, sender=alice, body="hi", reply_to_id=elsewhere.pk)
    response = post_send(alice_client, group_chat, "hi", reply_to=elsewhere.pk)

    assert response.status_code == 400
    assert "only reply to a message in this chat" in response.content.decode()
    assert not Message.objects.filter(chat=group_chat).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("reply_to", ["abc", "-1", "0", str(2**63), "999999"])
def test_a_reply_to_no_message_is_a_400(alice_client, group_chat, reply_to):
    response = post_send(alice_client, group_chat, "hi", reply_to=reply_to)
    assert response.status_code == 400
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_a_retried_reply_is_stored_once(alice_client, alice, bob, group_chat):
    original = services.send_message(chat=group_chat, sender=bob, body="question")
    for _ in range(2):
        assert post_send(alice_client, group_chat, "answer", reply_to=original.pk, client_id="same").status_code == 200
    assert list(Message.objects.filter(sender=alice).values_list("reply_to_id", flat=True)) == [original.pk]


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["blanked", "removed"])
def test_the_quote_of_a_deleted_original_says_so(alice_client, alice, bob, group_chat, how):
    original = services.send_message(chat=group_chat, sender=bob, body="regrettable words")
    services.send_message(chat=group_chat, sender=alice, body="what?", reply_to_id=original.pk)

    if how == "blanked":  # deleted for everyone: the body is gone, the row stays
        Message.objects.filter(pk=original.pk).update(body="")
    else:
        Message.objects.filter(pk=original.pk).delete()
    page = alice_client.get(reverse("chat:room", args=[group_chat.pk])).content.decode()

    assert "Message deleted" in page
    assert "regrettable words" not in page


@pytest.mark.django_db
def test_a_quote_escapes_the_original(alice_client, alice, bob, group_chat):
    original = services.send_message(chat=group_chat, sender=bob, body="<script>alert(1)</script>")
    services.send_message(chat=group_chat, sender=alice, body="hm", reply_to_id=original.pk)
    page = alice_client.get(reverse("chat:room", args=[group_chat.pk])).content.decode()
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --- @mentions ------------------------------------------------------------------------


@pytest.mark.django_db
def test_mentions_resolve_to_members_by_display_name_or_username(alice, bob, carol, dave, group_chat):
    body = "@Bob and @carol, not @Dave, nor bob@example.com or @Bobby"
    message = services.send_message(chat=group_chat, sender=alice, body=body)
    assert [(body[start:end], user_id) for start, end, user_id in message.mentions] == [
        ("@Bob", bob.pk),
        ("@carol", carol.pk),
    ]


@pytest.mark.django_db
def test_the_longest_member_name_wins_and_case_does_not_matter(alice, make_user, group_chat):
    ann = make_user("ann", first_name="Ann")
    ann_lee = make_user("annlee", first_name="Ann", last_name="Lee")
    services.add_members(chat=group_chat, actor=alice, users=[ann, ann_lee])
    message = services.send_message(chat=group_chat, sender=alice, body="@ann lee and @ANN")
    assert [user_id for _, _, user_id in message.mentions] == [ann_lee.pk, ann.pk]


@pytest.mark.django_db
def test_direct_chats_and_oneself_have_no_mentions(alice, bob, direct_chat, group_chat):
    assert services.send_message(chat=direct_chat, sender=alice, body="@Bob hi").mentions == []
    assert services.send_message(chat=group_chat, sender=alice, body="@Alice note to self").mentions == []


@pytest.mark.django_db
def test_a_mention_marks_the_chat_in_the_inbox_until_it_is_read(client, alice, bob, carol, dave, group_chat):
    services.send_message(chat=group_chat, sender=alice, body="@Bob can you look? @Dave too")
    client.force_login(bob)

    assert row_is_mentioned(client.get(reverse("chat:list")).content.decode())
    client.force_login(carol)
    assert not row_is_mentioned(client.get(reverse("chat:list")).content.decode())
    assert not Membership.objects.filter(user=dave, chat=group_chat).exists()

    client.force_login(bob)
    client.get(reverse("chat:room", args=[group_chat.pk]))  # reading it
    assert not row_is_mentioned(client.get(reverse("chat:list")).content.decode())


def row_is_mentioned(inbox_html: str) -> bool:
    mark = inbox_html.split("data-chat-mention", 1)[1].split(">", 1)[0]
    return "hidden" not in mark


@pytest.mark.django_db
def test_a_mention_is_highlighted_and_stronger_for_the_person_mentioned(client, alice, bob, carol, group_chat):
    services.send_message(chat=group_chat, sender=alice, body="@Bob <b>look</b>\nplease")
    client.force_login(bob)
    bob_page = client.get(reverse("chat:room", args=[group_chat.pk])).content.decode()
    client.force_login(carol)
    carol_page = client.get(reverse("chat:room", args=[group_chat.pk])).content.decode()

    assert f'<span class="mention mention--me" data-mention-user-id="{bob.pk}">@Bob</span>' in bob_page
    assert "bubble--mentions-me" in bob_page
    assert f'<span class="mention" data-mention-user-id="{bob.pk}">@Bob</span>' in carol_page
    assert "bubble--mentions-me" not in carol_page
    assert "&lt;b&gt;look&lt;/b&gt;<br>please" in carol_page


@pytest.mark.django_db
def test_a_name_with_markup_is_mentioned_as_text(alice, make_user, client, group_chat):
    sly = make_user("sly", first_name="<img src=x onerror=alert(1)>")
    services.add_members(chat=group_chat, actor=alice, users=[sly])
    message = services.send_message(chat=group_chat, sender=alice, body="hi @<img src=x onerror=alert(1)>")
    assert [user_id for *_, user_id in message.mentions] == [sly.pk]
    client.force_login(sly)
    page = client.get(reverse("chat:room", args=[group_chat.pk])).content.decode()
    candidates = client.get(reverse("chat:mention_candidates", args=[group_chat.pk])).json()
    assert "<img src=x" not in page
    assert "@&lt;img src=x onerror=alert(1)&gt;</span>" in page
    assert {"name": "Alice", "username": "alice", "id": alice.pk} in candidates["members"]


@pytest.mark.django_db
def test_a_stale_mention_span_is_plain_text(alice_client, alice, bob, group_chat):
    message = services.send_message(chat=group_chat, sender=alice, body="@Bob hello")
    Message.objects.filter(pk=message.pk).update(body="edited, no mention")  # as an edit would leave it
    page = alice_client.get(reverse("chat:room", args=[group_chat.pk])).content.decode()
    assert "edited, no mention" in page
    assert "data-mention-user-id" not in page


@pytest.mark.django_db
def test_mention_candidates_are_the_other_members_of_a_group(alice_client, alice, bob, carol, direct_chat, group_chat):
    members = alice_client.get(reverse("chat:mention_candidates", args=[group_chat.pk])).json()["members"]
    assert [member["username"] for member in members] == ["bob", "carol"]
    assert alice_client.get(reverse("chat:mention_candidates", args=[direct_chat.pk])).json() == {"members": []}


@pytest.mark.django_db
def test_mention_candidates_of_a_chat_you_are_not_in_are_a_404(client, dave, group_chat):
    client.force_login(dave)
    assert client.get(reverse("chat:mention_candidates", args=[group_chat.pk])).status_code == 404
    assert client.post(reverse("chat:mention_candidates", args=[group_chat.pk])).status_code == 405


# --- over the room socket -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_reply_over_the_socket_carries_its_quote_to_the_room(connect, alice, bob, group_chat):
    original = await database_sync_to_async(services.send_message)(chat=group_chat, sender=bob, body="When?")
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group_chat.pk}/")
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group_chat.pk}/")

    await alice_room.send_to(text_data=send_frame("r-1", "Tomorrow", reply_to=original.pk))

    ack = await receive_until(alice_room, "ack")
    frame = await receive_until(bob_room, "chat.message")
    assert frame["message_id"] == ack["message_id"]
    assert f'data-reply-to="{original.pk}"' in frame["html"]
    assert "When?" in frame["html"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("reply_to", ["12", True, -3, 2**70, "elsewhere"])
async def test_a_bad_reply_over_the_socket_is_an_invalid_send(connect, alice, bob, group_chat, direct_chat, reply_to):
    if reply_to == "elsewhere":
        reply_to = (await database_sync_to_async(services.send_message)(chat=direct_chat, sender=bob, body="x")).pk
    room, _, _ = await connect(alice, f"/ws/chat/{group_chat.pk}/")
    await room.send_to(text_data=send_frame("bad", "hi", reply_to=reply_to))
    error = await receive_until(room, "error")
    assert (error["code"], error["client_id"]) == ("invalid", "bad")
    assert not await database_sync_to_async(Message.objects.filter(chat=group_chat).exists)()


@pytest.mark.django_db(transaction=True)
async def test_a_mention_reaches_the_inbox_of_the_person_mentioned(connect, alice, bob, carol, group_chat):
    bob_inbox, _, _ = await connect(bob, "/ws/chat/inbox/")
    carol_inbox, _, _ = await connect(carol, "/ws/chat/inbox/")
    await database_sync_to_async(services.send_message)(chat=group_chat, sender=alice, body="@Bob see this")
    assert (await receive_until(bob_inbox, "inbox.message"))["mentioned"] is True
    assert (await receive_until(carol_inbox, "inbox.message"))["mentioned"] is False


@pytest.mark.django_db(transaction=True)
async def test_typing_reaches_the_others_in_the_room_but_not_the_typist(connect, alice, bob, carol, group_chat):
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group_chat.pk}/")
    alice_other_tab, _, _ = await connect(alice, f"/ws/chat/{group_chat.pk}/")
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group_chat.pk}/")
    carol_room, _, _ = await connect(carol, f"/ws/chat/{group_chat.pk}/")

    await alice_room.send_to(text_data='{"type": "typing"}')
    await alice_room.send_to(text_data=send_frame("after", "done typing"))

    expected = {"type": "chat.typing", "chat_id": group_chat.pk, "user_id": alice.pk, "name": "Alice"}
    for other in (bob_room, carol_room):
        assert await room_frames_until_message(other) == [expected]
    for own in (alice_room, alice_other_tab):
        assert await room_frames_until_message(own) == []


@pytest.mark.django_db(transaction=True)
async def test_a_message_does_not_overtake_its_senders_typing_while_the_layer_is_slow(
    connect, alice, bob, group_chat, monkeypatch
):
    """The layer takes the typing frame at once but brings it back late (a busy Redis): the
    person's message, which reaches this process's sockets straight from its hub, must
    still find their "is typing" there before it."""
    layer = get_channel_layer()
    group_send, late = layer.group_send, []

    async def deliver_late(group_name, event):
        await asyncio.sleep(0.5)
        await group_send(group_name, event)

    async def slow_typing_send(group_name, event):
        if event["type"] != "chat.typing":
            return await group_send(group_name, event)
        late.append(asyncio.ensure_future(deliver_late(group_name, event)))

    monkeypatch.setattr(layer, "group_send", slow_typing_send)
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group_chat.pk}/")
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group_chat.pk}/")
    try:
        await alice_room.send_to(text_data='{"type": "typing"}')
        await alice_room.send_to(text_data=send_frame("after", "done typing"))

        assert [frame["user_id"] for frame in await room_frames_until_message(bob_room)] == [alice.pk]
        assert late
        await asyncio.gather(*late)  # the late copy comes back through the hub, which does not hand it over again
        later = []
        while not await bob_room.receive_nothing(timeout=0.3):
            later.append(json.loads(await bob_room.receive_from())["type"])
        assert "chat.typing" not in later
    finally:
        for delivery in late:
            delivery.cancel()
        await asyncio.gather(*late, return_exceptions=True)


async def room_frames_until_message(communicator) -> list[dict]:
    """The typing and error frames a socket gets before the next chat.message: room events
    reach it in the order they were sent, so a typing frame sent before it is here by then."""
    frames = []
    while True:
        frame = json.loads(await communicator.receive_from(timeout=test_consumers.TIMEOUT))
        if frame["type"] == "chat.message":
            return frames
        if frame["type"] in ("chat.typing", "error"):
            frames.append(frame)


@pytest.mark.django_db(transaction=True)
async def test_typing_past_the_rate_is_dropped_silently(connect, alice, bob, group_chat, settings):
    settings.CHAT_RATE_LIMITS = {"typing": "2/m"}
    alice_room, _, _ = await connect(alice, f"/ws/chat/{group_chat.pk}/")
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group_chat.pk}/")

    for _ in range(4):
        await alice_room.send_to(text_data='{"type": "typing"}')
    await alice_room.send_to(text_data=send_frame("after", "done typing"))

    frames = await room_frames_until_message(bob_room)
    # A dropped signal is not merely late: nothing more comes after the message either.
    while not await bob_room.receive_nothing(timeout=0.3):
        frames.append(json.loads(await bob_room.receive_from()))
    assert [frame["type"] for frame in frames if frame["type"] == "chat.typing"] == ["chat.typing"] * 2
    assert await room_frames_until_message(alice_room) == []  # no error frame either


@pytest.mark.django_db(transaction=True)
async def test_a_typing_frame_from_someone_no_longer_a_member_closes_the_socket(connect, bob, carol, group_chat):
    bob_room, _, _ = await connect(bob, f"/ws/chat/{group_chat.pk}/")
    carol_room, _, _ = await connect(carol, f"/ws/chat/{group_chat.pk}/")
    # Their membership gone without the revocation reaching this socket.
    await database_sync_to_async(Membership.objects.filter(chat=group_chat, user=bob).delete)()

    await bob_room.send_to(text_data='{"type": "typing"}')

    assert (await receive_until(bob_room, "error"))["code"] == "forbidden"
    await expect_close(bob_room, consumers.CLOSE_FORBIDDEN)
    await carol_room.send_to(text_data=send_frame("after", "anyone?"))
    assert await room_frames_until_message(carol_room) == []


@pytest.mark.django_db
def test_the_typing_signals_of_many_sockets_are_checked_in_one_query(
    alice, bob, dave, group_chat, direct_chat, settings, django_assert_num_queries
):
    """A busy room's typists in one trip (`signal_typing_many`, as the sockets' batches send
    them): one round trip to the rate's cache, one query for every chat's members."""
    settings.CHAT_RATE_LIMITS = {"typing": "1/m"}
    signals = [
        services.Typing(group_chat.pk, alice, frozenset({alice.pk, bob.pk, dave.pk})),  # Dave's socket here too
        services.Typing(group_chat.pk, bob),
        services.Typing(group_chat.pk, dave),  # not a member
        services.Typing(direct_chat.pk, alice),  # Alice's second signal this minute
    ]
    with django_assert_num_queries(1):
        refusals = services.signal_typing_many(signals)
    assert [type(refusals[signal]).__name__ for signal in signals] == [
        "NoneType",
        "NoneType",
        "DoesNotExist",
        "RateLimited",
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_non_member_cannot_open_the_room_to_signal_typing(connect, dave, group_chat):
    room, connected, _ = await connect(dave, f"/ws/chat/{group_chat.pk}/")
    await expect_close(room, consumers.CLOSE_FORBIDDEN)
