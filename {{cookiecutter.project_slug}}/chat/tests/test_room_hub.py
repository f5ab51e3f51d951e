"""A process fans a room's events out once: its hub, not each socket, is in the room group."""

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat import events, services
from chat.tests import test_consumers
from chat.tests.test_consumers import receive_until

# The socket fixtures of test_consumers: each test on the in-memory layer and on Redis.
channel_layer = test_consumers.channel_layer
connect = test_consumers.connect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def group(alice, bob, carol):
    return services.create_group_chat(creator=alice, name="Team", members=[bob, carol])


@pytest.mark.parametrize("channel_layer", ["memory"], indirect=True)
async def test_the_room_group_holds_one_channel_per_process_whatever_the_sockets(
    connect, channel_layer, alice, bob, carol, group
):
    layer = get_channel_layer()
    sockets = [(await connect(user, f"/ws/chat/{group.pk}/"))[0] for user in (alice, bob, carol, alice)]
    assert len(layer.groups[events.room_group(group.pk)]) == 1

    message = await database_sync_to_async(services.send_message)(chat=group, sender=bob, body="to all four")
    for socket in sockets:
        assert (await receive_until(socket, "chat.message"))["message_id"] == message.pk

    for socket in sockets:
        await socket.disconnect()
    assert not layer.groups.get(events.room_group(group.pk))


async def test_a_socket_that_leaves_gets_nothing_more_and_the_others_still_do(connect, alice, bob, group):
    staying, _, _ = await connect(alice, f"/ws/chat/{group.pk}/")
    leaving, _, _ = await connect(bob, f"/ws/chat/{group.pk}/")
    await receive_until(leaving, "chat.presence")
    await leaving.disconnect()

    message = await database_sync_to_async(services.send_message)(chat=group, sender=alice, body="after bob left")

    assert (await receive_until(staying, "chat.message"))["message_id"] == message.pk
