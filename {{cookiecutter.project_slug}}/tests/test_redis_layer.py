"""The project's channel layer lets every connection go when a receive fails, and makes
fewer round trips to Redis than channels_redis's for each event of a busy room.

Through Sentinel, a pooled connection left idle during a failover still leads to the old
primary; if that one stopped answering, each command given such a connection waits out its
timeout. After a receive failed, no connection from before may be handed out again.
"""

import asyncio
import collections
import shutil

import pytest
from channels.layers import channel_layers, get_channel_layer

from chat.realtime.hub import hub_channel_name
from chat.realtime.loop import GroupChangeFailed, group_add, group_discard
from chat.tests.test_ratelimit import RedisProcess

TIMEOUT = 5


@pytest.fixture
def redis(settings, tmp_path):
    """The project's channel layer on a redis-server of the test's own."""
    pytest.importorskip("channels_redis", reason="the Redis channel layer comes with the redis option")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis = RedisProcess(str(tmp_path))
    layer = {**settings.CHANNEL_LAYERS["default"], "CONFIG": {"hosts": [f"redis://127.0.0.1:{redis.port}/0"]}}
    settings.CHANNEL_LAYERS = {"default": layer}
    channel_layers.backends.clear()
    yield redis
    redis.stop()
    channel_layers.backends.clear()


def clients(redis) -> list[dict]:
    """The connections open on the test's Redis, besides the one asking."""
    from redis import Redis

    with Redis(port=redis.port) as probe:
        own = probe.client_id()
        return [client for client in probe.client_list() if client["id"] != own]


def kill_client(redis, client_id: str) -> None:
    from redis import Redis

    with Redis(port=redis.port) as probe:
        probe.client_kill_filter(_id=client_id)


async def receive_fails(redis) -> set[str]:
    """A receive waits (BZPOPMIN); its connection is cut; which connections from before remain."""
    layer = get_channel_layer()
    waiting = asyncio.create_task(layer.receive(await layer.new_channel()))
    # More connections for the pool: sends at once, each on a connection of its own.
    await asyncio.gather(*(layer.group_send(f"group{n}", {"type": "hello"}) for n in range(4)))
    async with asyncio.timeout(TIMEOUT):
        while not any(client["cmd"] == "bzpopmin" for client in await asyncio.to_thread(clients, redis)):
            await asyncio.sleep(0.05)
    before = await asyncio.to_thread(clients, redis)
    blocked = next(client for client in before if client["cmd"] == "bzpopmin")
    await asyncio.to_thread(kill_client, redis, blocked["id"])
    with pytest.raises(Exception, match="[Cc]onnection"):
        await asyncio.wait_for(waiting, TIMEOUT)
    after = await asyncio.to_thread(clients, redis)
    return {client["id"] for client in before} & {client["id"] for client in after}


def test_after_a_receive_fails_no_connection_from_before_is_used_again(redis):
    still_open = asyncio.run(receive_fails(redis))
    assert still_open == set(), "the layer closed every connection it had pooled"


async def test_a_receive_whose_cancellation_redis_py_loses_still_ends(redis, monkeypatch):
    """A cancel that meets the blocking pop's read timeout is swallowed inside redis-py and the
    pop retried; a socket's receive must end anyway, or the server's shutdown waits for it."""
    layer = get_channel_layer()
    receive_single = type(layer).receive_single

    async def losing_the_first_cancel(self, channel):
        try:
            return await receive_single(self, channel)
        except asyncio.CancelledError:  # as when the read's timeout turned it into a retry
            asyncio.current_task().uncancel()
            return await receive_single(self, channel)

    monkeypatch.setattr(type(layer), "receive_single", losing_the_first_cancel)
    waiting = asyncio.create_task(layer.receive(await layer.new_channel()))
    async with asyncio.timeout(TIMEOUT):
        while not any(client["cmd"] == "bzpopmin" for client in await asyncio.to_thread(clients, redis)):
            await asyncio.sleep(0.05)
    waiting.cancel()
    done, _ = await asyncio.wait({waiting}, timeout=TIMEOUT)
    assert waiting in done and waiting.cancelled()


async def test_commands_wait_for_a_free_connection_rather_than_fail(redis, settings):
    """Past the pool's size (thousands of sockets joining their groups at once, after a
    restart) commands queue for a connection instead of raising "Too many connections"."""
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    config["hosts"] = [{"address": config["hosts"][0], "max_connections": 2}]
    channel_layers.backends.clear()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*(layer.group_add(f"group{n}", channel) for n in range(20)))
    await layer.flush()


def group_members(redis, layer, groups: list[str]) -> dict[str, list[str]]:
    from redis import Redis

    with Redis(port=redis.port) as probe:
        return {group: [m.decode() for m in probe.zrange(layer._group_key(group), 0, -1)] for group in groups}


def group_ttl(redis, layer, group: str) -> int:
    from redis import Redis

    with Redis(port=redis.port) as probe:
        return probe.ttl(layer._group_key(group))


async def test_group_changes_asked_together_go_to_redis_together(redis, monkeypatch):
    """A process that stops leaves the groups of every person and room it served at once, and
    its successor joins them again as their sockets come back: the joins and leaves asked
    meanwhile go to Redis in one pipeline, in the order asked, each group with the layer's
    expiry. A bad group name fails its own caller, not the others."""
    layer = get_channel_layer()
    batches = []
    change_groups = type(layer).change_groups

    async def counted(self, changes):
        batches.append(len(changes))
        return await change_groups(self, changes)

    monkeypatch.setattr(type(layer), "change_groups", counted)
    channel, other = await layer.new_channel(), await layer.new_channel()
    groups = [f"person.{n}" for n in range(300)]
    try:
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(*(group_add(layer, g, channel) for g in groups), group_add(layer, "room", other))
            leaving = [group_discard(layer, group, channel) for group in groups[::2]]
            back = group_add(layer, groups[0], channel)  # asked after its leave: it ends in the group
            bad = group_add(layer, "bad name!", channel)
            outcomes = await asyncio.gather(*leaving, bad, back, return_exceptions=True)

        assert batches == [301, 151], "each burst of changes in one call"
        assert [type(o) for o in outcomes] == [type(None)] * 150 + [TypeError, type(None)]
        members = await asyncio.to_thread(group_members, redis, layer, [*groups, "room"])
        assert [group for group in groups if members[group] == [channel]] == [groups[0], *groups[1::2]]
        assert [group for group in groups if members[group] == []] == groups[2::2]
        assert members["room"] == [other]
        assert 0 < await asyncio.to_thread(group_ttl, redis, layer, "room") <= layer.group_expiry
    finally:
        await layer.flush()


async def test_a_join_cancelled_before_its_batch_is_not_made(redis):
    """A socket that goes away while its hub's join waits for the batch under way takes the
    join back: the hub is not left in a group it has no socket for."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    try:
        async with asyncio.timeout(TIMEOUT):
            first = asyncio.create_task(group_add(layer, "first", channel))
            await asyncio.sleep(0)  # queued, and the batch started
            await asyncio.sleep(0)  # the batch on its way to Redis
            second = asyncio.create_task(group_add(layer, "second", channel))
            await asyncio.sleep(0)  # queued behind it
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            await first
            await group_add(layer, "third", channel)  # the next batch: "second" is not in it
        members = await asyncio.to_thread(group_members, redis, layer, ["first", "second", "third"])
        assert members == {"first": [channel], "second": [], "third": [channel]}
    finally:
        await layer.flush()


async def test_group_changes_fail_their_callers_while_redis_is_down_and_work_once_it_is_back(redis):
    """Each caller gets an error of its own (what Redis raised as its cause), and the changes
    asked after Redis is back are made."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await group_add(layer, "warm-up", channel)
    await asyncio.to_thread(redis.stop)
    async with asyncio.timeout(TIMEOUT * 2):
        outcomes = await asyncio.gather(
            *(group_add(layer, f"person.{n}", channel) for n in range(3)), return_exceptions=True
        )
    assert [type(o) for o in outcomes] == [GroupChangeFailed] * 3
    assert len({id(o) for o in outcomes}) == 3 and all(o.__cause__ is not None for o in outcomes)
    await asyncio.to_thread(redis.start)
    try:
        async with asyncio.timeout(TIMEOUT):
            await group_add(layer, "person.0", channel)
        members = await asyncio.to_thread(group_members, redis, layer, ["person.0"])
        assert members == {"person.0": [channel]}
    finally:
        await layer.flush()


def command_calls(redis) -> collections.Counter:
    """How many times each command has run on the test's Redis (scripts' own calls included)."""
    from redis import Redis

    with Redis(port=redis.port) as probe:
        stats = probe.info("commandstats")
    return collections.Counter({name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()})


async def test_a_process_takes_its_channels_events_off_redis_many_at_a_time(redis):
    """Every local channel of a process (its room hub's, its user hub's) shares one Redis key,
    and a busy room's events queue there: each is taken in one round trip with those behind
    it, in their order, and each channel gets its own."""
    layer = get_channel_layer()
    room, people = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", room)
    await layer.group_add("room", people)
    await layer.group_add("people", people)
    for number in range(60):
        await layer.group_send("room", {"type": "room.event", "number": number})
    await layer.group_send("people", {"type": "people.event"})
    before = await asyncio.to_thread(command_calls, redis)

    async with asyncio.timeout(TIMEOUT):
        room_events = [await layer.receive(room) for _ in range(60)]
        people_events = [await layer.receive(people) for _ in range(61)]

    pops = await asyncio.to_thread(command_calls, redis) - before
    assert [event["number"] for event in room_events] == list(range(60))
    assert [event.get("number") for event in people_events] == [*range(60), None]
    assert all("__asgi_channel__" not in event for event in room_events + people_events)
    assert pops["zpopmin"] + pops["bzpopmin"] == 1, pops
    assert pops["eval"] == 0, "no backup queue to clean before each pop"


async def test_a_receive_waits_for_the_next_event_when_none_is_queued(redis):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    waiting = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await layer.group_send("room", {"type": "room.event"})
    async with asyncio.timeout(TIMEOUT):
        assert await waiting == {"type": "room.event"}


async def test_a_group_send_is_one_script_and_leaves_full_channels_out(redis, settings):
    """The group's members read in one pipeline, then one script pushes the event to each
    member's key: no transaction, and a channel at its capacity gets nothing more, as in
    channels_redis, while the others still get it."""
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    config["channel_capacity"] = {"slow-*": 2}
    channel_layers.backends.clear()
    layer = get_channel_layer()
    local = await layer.new_channel()
    await layer.group_add("warm-up", local)
    await layer.group_send("warm-up", {"type": "warm.up"})  # the script is loaded once
    for channel in ("slow-reader", "other-reader", local):
        await layer.group_add("room", channel)
    before = await asyncio.to_thread(command_calls, redis)
    for number in range(3):
        await layer.group_send("room", {"type": "room.event", "number": number})
    sent = await asyncio.to_thread(command_calls, redis) - before

    async with asyncio.timeout(TIMEOUT):
        slow = [(await layer.receive("slow-reader"))["number"] for _ in range(2)]
        other = [(await layer.receive("other-reader"))["number"] for _ in range(3)]
        assert await layer.receive(local) == {"type": "warm.up"}
        here = [(await layer.receive(local))["number"] for _ in range(3)]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await layer.receive("slow-reader")
    assert (slow, other, here) == ([0, 1], [0, 1, 2], [0, 1, 2])
    assert sent["evalsha"] == 3 and sent["zrange"] == 3, sent
    assert sent["eval"] == sent["multi"] == sent["exec"] == 0, sent


async def test_events_popped_for_a_receive_cancelled_meanwhile_go_to_the_next_receive(redis, monkeypatch):
    """A receive is cancelled when its hub's last socket leaves, perhaps while its pop's
    answer is on its way: the events Redis gave it, any local channel's, are not lost."""
    from redis.asyncio import Redis

    layer = get_channel_layer()
    room, people = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", room)
    await layer.group_add("people", people)
    zpopmin, answered = Redis.zpopmin, asyncio.Event()

    async def answer_on_its_way(self, *args, **kwargs):
        popped = await zpopmin(self, *args, **kwargs)
        if popped:
            answered.set()
        await asyncio.sleep(0.3)
        return popped

    monkeypatch.setattr(Redis, "zpopmin", answer_on_its_way)
    await layer.group_send("people", {"type": "session.ended"})
    await layer.group_send("room", {"type": "room.event"})
    receiving = asyncio.create_task(layer.receive(room))
    await asyncio.wait_for(answered.wait(), TIMEOUT)  # Redis has answered; the answer is not in yet
    receiving.cancel()
    async with asyncio.timeout(TIMEOUT):
        assert await layer.receive(people) == {"type": "session.ended"}
        assert await layer.receive(room) == {"type": "room.event"}


async def test_an_event_that_waited_in_the_process_past_the_layers_expiry_is_dropped(redis, settings):
    """As Redis drops an event left unread past `expiry`, so does the process with one it
    popped along with others and did not hand out in time."""
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["expiry"] = 1
    channel_layers.backends.clear()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "room.event", "number": 1})
    await layer.group_send("room", {"type": "room.event", "number": 2})
    async with asyncio.timeout(TIMEOUT):
        assert (await layer.receive(channel))["number"] == 1  # the second popped with it
        await asyncio.sleep(1.2)
        await layer.group_send("room", {"type": "room.event", "number": 3})
        assert (await layer.receive(channel))["number"] == 3


async def test_a_local_channel_holds_as_many_events_in_the_process_as_its_capacity_on_redis(redis, settings):
    """Another local channel's receive took a burst of a hub's events off Redis while the hub
    was busy: the hub gets them all when it reads again, up to its channel's capacity, not
    only the last 100 (channels_redis's default for every channel, in the process)."""
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["channel_capacity"] = {"*!chat-hub-*": 1000}
    channel_layers.backends.clear()
    layer = get_channel_layer()
    busy_hub, people = [hub_channel_name(await layer.new_channel()) for _ in range(2)]  # a room hub, a user hub
    await layer.group_add("room", busy_hub)
    await layer.group_add("people", people)
    for number in range(150):
        await layer.group_send("room", {"type": "room.event", "number": number})
    await layer.group_send("people", {"type": "session.ended"})
    async with asyncio.timeout(TIMEOUT):
        assert await layer.receive(people) == {"type": "session.ended"}  # after the room's 150
        numbers = [(await layer.receive(busy_hub))["number"] for _ in range(150)]
    assert numbers == list(range(150))
