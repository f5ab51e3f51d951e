"""Property-based tests: arbitrary text, Unicode, huge and malformed input at every form,
query parameter and websocket frame. Never a 500, never a partial write."""

import json

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import services
from chat.models import Chat, Membership, Message
from chat.realtime import consumers
from chat.routing import websocket_urlpatterns

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Text people (and attackers) type: any Unicode, control characters, NUL, markup, huge.
wild_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=50),
    st.sampled_from(["\x00", " ", "\n\t", "<script>alert(1)</script>", "²", "١٢٣", "-1", "1e9", "0x10", "9" * 40]),
    st.text(min_size=4001, max_size=5000),
)
CLEAN_STATUSES = {200, 302, 400, 403, 404, 405}


@pytest.fixture(autouse=True)
def no_rate_limits(settings):
    settings.CHAT_RATE_LIMITS = {"send": None, "email_lookup": None, "new_chat": None, "new_group": None}


@pytest.fixture
def group(alice, bob, carol):
    return services.create_group_chat(creator=alice, name="Team", members=[bob, carol])


def table_counts():
    return (Chat.objects.count(), Membership.objects.count(), Message.objects.count())


@FUZZ
@given(value=wild_text, name=st.sampled_from(["before", "after", "offset", "email"]))
def test_query_parameters_never_cause_a_500(alice_client, group, value, name):
    for url in [
        reverse("chat:messages", args=[group.pk]),
        reverse("chat:list_partial"),
        reverse("chat:check_user"),
    ]:
        response = alice_client.get(url, {name: value}, headers={"HX-Request": "true"})
        assert response.status_code in CLEAN_STATUSES


@FUZZ
@given(body=wild_text)
def test_sending_saves_exactly_the_message_or_nothing(alice_client, group, body):
    before = Message.objects.count()
    response = alice_client.post(reverse("chat:send", args=[group.pk]), {"body": body}, headers={"HX-Request": "true"})
    assert response.status_code in {200, 400}
    if response.status_code == 200:
        assert Message.objects.count() == before + 1
        # Stored as sent, but for line breaks, which browsers post as "\r\n": each becomes "\n".
        assert Message.objects.latest("pk").body == body.replace("\r\n", "\n").replace("\r", "\n").strip()
    else:
        assert Message.objects.count() == before


@FUZZ
@given(email=wild_text)
def test_starting_a_chat_with_any_input_never_half_creates_it(alice_client, email):
    before = table_counts()
    response = alice_client.post(reverse("chat:new"), {"email": email}, headers={"HX-Request": "true"})
    assert response.status_code in {400}
    assert table_counts() == before


@FUZZ
@given(name=wild_text, members=wild_text)
def test_creating_a_group_with_any_input_is_all_or_nothing(alice_client, name, members):
    before_chats, before_members, _ = table_counts()
    response = alice_client.post(
        reverse("chat:new_group"), {"name": name, "members": members}, headers={"HX-Request": "true"}
    )
    assert response.status_code in {200, 400}
    chats, memberships, _ = table_counts()
    if response.status_code == 400:
        assert (chats, memberships) == (before_chats, before_members)
    else:
        group = Chat.objects.latest("pk")
        assert chats == before_chats + 1
        assert memberships == before_members + group.memberships.count()


@FUZZ
@given(action=st.one_of(st.sampled_from(["rename", "add", "remove"]), wild_text), value=wild_text)
def test_editing_a_group_with_any_input_never_causes_a_500(alice_client, group, action, value):
    before = table_counts()
    data = {"action": action, "name": value, "email": value, "user_id": value}
    response = alice_client.post(reverse("chat:edit", args=[group.pk]), data)
    assert response.status_code in CLEAN_STATUSES
    if response.status_code != 302:
        assert table_counts() == before


frames = st.one_of(
    wild_text,
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=10,
    ).map(json.dumps),
    st.builds(
        lambda kind, value: json.dumps({"type": kind, "message_id": value, "visible": value}),
        st.sampled_from(["read", "visibility", "ping", "chat.message", "inbox.message", "__init__", "connect"]),
        st.one_of(st.integers(), st.text(), st.none(), st.booleans(), st.floats()),
    ),
)


def is_ping(frame: str) -> bool:
    try:
        parsed = json.loads(frame)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("type") == "ping"


@pytest.mark.django_db(transaction=True)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sent=st.lists(frames.filter(bool), min_size=1, max_size=8))
def test_any_websocket_frames_leave_the_room_socket_working(alice, group, sent):
    async def exchange():
        consumers._frame_windows.clear()  # each example is a fresh visit, not 40 in 10 s by one person
        socket = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/chat/{group.pk}/")
        socket.scope["user"] = alice
        connected, _ = await socket.connect()
        assert connected
        for frame in sent:
            await socket.send_to(text_data=frame)
        await socket.send_to(text_data='{"type": "ping"}')
        # Every reply is an error or a pong, and the final ping is still answered.
        pongs_expected = 1 + sum(is_ping(frame) for frame in sent)
        while pongs_expected:
            reply = json.loads(await socket.receive_from(timeout=3))
            assert reply["type"] in {"error", "pong", "chat.presence", "chat.sync"}
            pongs_expected -= reply["type"] == "pong"
        await socket.disconnect()

    async_to_sync(exchange)()
