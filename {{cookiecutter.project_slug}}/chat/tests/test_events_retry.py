"""Events that fail to go out while the channel layer is away (Redis restarting, or Sentinel
promoting a replica) go again once it is back: an open socket that missed a room's last
frame would otherwise not learn of that message until the next one showed a gap."""

import asyncio

import pytest

from chat.events import room_group, to_user
from chat.realtime import loop, mailbox
from chat.realtime.loop import EventQueue, QueuedSend
from chat.realtime.mailbox import InboxMailbox

INTERVAL = 0.05


@pytest.fixture(autouse=True)
def short_waits(monkeypatch):
    monkeypatch.setattr(mailbox, "INBOX_UPDATE_INTERVAL", INTERVAL)
    monkeypatch.setattr(loop, "SEND_RETRY_PAUSES", (INTERVAL, INTERVAL))


class FailoverLayer:
    """A layer whose first `failing` group sends fail, as Redis's do during a failover."""

    def __init__(self, failing: int):
        self.failing = failing
        self.tries = 0
        self.sent: list[tuple[str, dict]] = []

    async def group_send(self, group: str, event: dict) -> None:
        self.tries += 1
        if self.tries <= self.failing:
            raise ConnectionError("No master found")
        self.sent.append((group, event))


async def eventually(condition) -> None:
    async with asyncio.timeout(10):  # a deadline for a loaded machine, not a measurement
        while not condition():
            await asyncio.sleep(INTERVAL / 5)


def renamed(chat_id: int, name: str) -> dict:
    return {"type": "chat.renamed", "chat_id": chat_id, "name": name}


async def test_room_events_that_fail_go_again_in_the_order_they_were_sent():
    layer = FailoverLayer(failing=2)
    for name in ("first", "second"):
        loop.queue_on_this_loop([QueuedSend(loop.group_send_all, (layer, [(room_group(1), renamed(1, name))]))])
    await eventually(lambda: len(layer.sent) == 2)
    assert [event["name"] for _, event in layer.sent] == ["first", "second"]


async def test_a_layer_that_stays_down_costs_each_later_send_one_try_until_one_works():
    layer = FailoverLayer(failing=len(loop.SEND_RETRY_PAUSES) + 2)
    queue = EventQueue.for_running_loop()
    for name in ("lost", "lost too", "sent"):
        loop.queue_on_this_loop([QueuedSend(loop.group_send_all, (layer, [(room_group(1), renamed(1, name))]))])
    await eventually(lambda: queue.runner.done())
    # The first send: a try and a retry per pause; the second: one try; the third works.
    assert layer.tries == len(loop.SEND_RETRY_PAUSES) + 1 + 1 + 1
    assert [event["name"] for _, event in layer.sent] == ["sent"]
    assert not queue.layer_down, "once a send works, failures are retried again"


async def test_inbox_updates_that_fail_go_again_after_the_interval():
    layer = FailoverLayer(failing=1)
    update = {"type": "inbox.unread", "user_id": 7, "chat_id": 1, "unread": 0, "total_unread": 0}
    await InboxMailbox.for_running_loop().post(layer, [update])
    await eventually(lambda: layer.sent)
    assert layer.sent == [(to_user(7, {})[0], {"type": "inbox.batch", "events": [update]})]


class Steps:
    """Sends and local parts that note what they did, in order; `slow_send` finishes once
    `release` is set (the layer slow with it: Redis busy, or a retry)."""

    def __init__(self):
        self.done: list[str] = []
        self.release = asyncio.Event()

    async def send(self, name):
        self.done.append(f"send {name}")

    async def slow_send(self, name):
        await self.release.wait()
        await self.send(name)

    async def local(self, name):
        self.done.append(f"local {name}")

    async def failing(self, name):
        raise RuntimeError("a bug")


async def test_local_parts_run_before_the_sends_ahead_of_them_but_never_before_a_send_without_one():
    """A send's local part (frames to this process's sockets) may run before the layer sends
    queued ahead of it, never before one that has no local part: frames keep their order."""
    steps = Steps()
    names = (("a", steps.local), ("b", steps.local), ("c", None), ("d", steps.local))
    loop.queue_on_this_loop([QueuedSend(steps.send, (name,), local_part) for name, local_part in names])
    await EventQueue.for_running_loop().finished()

    assert steps.done == ["local a", "local b", "send a", "send b", "send c", "local d", "send d"]


@pytest.mark.parametrize("on_its_way", ["with a local part", "without one"])
async def test_a_send_on_its_way_to_the_layer_holds_back_later_local_parts_only_if_it_had_none(on_its_way):
    """While the layer is slow with a send (Redis busy, or being retried), the local parts
    handed over after it run at once if its own ran: this process's sockets have its frames,
    so nothing is overtaken here. Without one (a message sent over HTTP) they wait for it."""
    steps = Steps()
    first_local = steps.local if on_its_way == "with a local part" else None
    loop.queue_on_this_loop([QueuedSend(steps.slow_send, ("a",), first_local)])
    try:
        await asyncio.sleep(INTERVAL)  # "a" is on its way
        loop.queue_on_this_loop([QueuedSend(steps.send, ("b",), steps.local)])
        if first_local:
            await eventually(lambda: "local b" in steps.done)
            assert steps.done == ["local a", "local b"]
        else:
            await asyncio.sleep(INTERVAL)
            assert steps.done == []
    finally:
        steps.release.set()
    await EventQueue.for_running_loop().finished()

    if first_local:
        assert steps.done == ["local a", "local b", "send a", "send b"]
    else:
        assert steps.done == ["send a", "local b", "send b"]


@pytest.mark.parametrize("between", ["a send without a local part", "a failed local part"])
async def test_local_parts_run_while_a_send_is_on_its_way_stop_where_the_queue_would(between):
    """Run early, local parts still stop at a waiting send whose frames reach this process's
    sockets only with its layer send: one without a local part, or whose local part failed."""
    steps = Steps()
    loop.queue_on_this_loop([QueuedSend(steps.slow_send, ("a",), steps.local)])
    try:
        await eventually(lambda: steps.done == ["local a"])
        await asyncio.sleep(INTERVAL)  # "a" is on its way
        middle = None if between == "a send without a local part" else steps.failing
        loop.queue_on_this_loop([QueuedSend(steps.send, ("b",), middle), QueuedSend(steps.send, ("c",), steps.local)])
        await asyncio.sleep(INTERVAL)
        assert steps.done == ["local a"]
    finally:
        steps.release.set()
    await EventQueue.for_running_loop().finished()

    assert steps.done == ["local a", "send a", "send b", "local c", "send c"]


async def test_a_send_whose_local_part_failed_is_still_sent():
    steps = Steps()
    loop.queue_on_this_loop([QueuedSend(steps.send, ("a",), steps.failing), QueuedSend(steps.send, ("b",))])
    await EventQueue.for_running_loop().finished()

    assert steps.done == ["send a", "send b"]
