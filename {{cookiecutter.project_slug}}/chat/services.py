"""Every write the chat app makes. Views and consumers call these; nothing else saves.

Each service runs in one transaction and schedules its channel-layer events with
`transaction.on_commit`, so a socket never hears about a row that was rolled back.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import ProhibitNullCharactersValidator
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Count, Exists, F, Q, Value, When
from django.utils import timezone

from chat import events, metrics, selectors
from chat.conf import chat_setting
from chat.models import MAX_ID, Block, Chat, FormerMembership, Membership, Message, Reaction, Report
from chat.ratelimit import RateLimited, check_rates, refund, wait_text
from chat.realtime import presence


def after_commit(send_events) -> None:
    """Send events once the transaction commits. A channel layer that is down (Redis
    restarting) is logged, never turned into an error for a write that succeeded:
    clients catch up from the database when they reconnect."""
    transaction.on_commit(send_events, robust=True)


def direct_key_for(user_a, user_b) -> str:
    low, high = sorted([user_a.pk, user_b.pk])
    return f"{low}:{high}"


def locked_chats():
    """Chats read with their rows locked until the transaction ends, as every send, read mark
    and message change locks its chat: they take their turns, chat by chat.

    FOR NO KEY UPDATE (on PostgreSQL; SQLite's one writer takes the turns there): a row that
    only points at the chat (a socket's presence row, a membership, a message) is inserted
    without waiting for the lock, as with an UPDATE of the chat's own columns. Under FOR
    UPDATE, a batch of presence rows inserted for several rooms held one room's row while
    waiting for another's that a batch of read marks held, which waited for the first: a
    deadlock, seen in a restart's reconnect storm."""
    return Chat.objects.select_for_update(no_key=True)


def get_or_create_direct_chat(*, user, other) -> tuple[Chat, bool]:
    """Open the one direct chat between two people, creating it if needed.

    A concurrent creation by the other person loses on the unique `direct_key` and
    reads the winner's chat instead. A chat one of them deleted for themselves shows
    up again in their list (still without the deleted history).
    """
    if user.pk == other.pk:
        raise ValidationError("You cannot start a chat with yourself.")
    refuse_direct_chat_if_blocked(user=user, other=other)
    key = direct_key_for(user, other)
    try:
        with transaction.atomic():
            chat = Chat.objects.create(kind=Chat.Kind.DIRECT, direct_key=key, created_by=user)
            Membership.objects.bulk_create([Membership(chat=chat, user=user), Membership(chat=chat, user=other)])
    except IntegrityError:
        chat = Chat.objects.get(direct_key=key)
        Membership.objects.filter(chat=chat, user=user, is_hidden=True).update(is_hidden=False)
        return chat, False
    after_commit(lambda: events.chat_list_changed(user_ids=[user.pk, other.pk], chat_id=chat.pk))
    return chat, True


def create_group_chat(*, creator, name: str, members: Iterable) -> Chat:
    """A named group; the creator is its first admin."""
    name = clean_group_name(name)
    others = {member.pk: member for member in members if member.pk != creator.pk}
    check_group_size(len(others) + 1)
    with transaction.atomic():
        chat = Chat.objects.create(kind=Chat.Kind.GROUP, name=name, created_by=creator)
        Membership.objects.bulk_create(
            [Membership(chat=chat, user=creator, role=Membership.Role.ADMIN)]
            + [Membership(chat=chat, user=member) for member in others.values()]
        )
        user_ids = [creator.pk, *others]
        after_commit(lambda: events.chat_list_changed(user_ids=user_ids, chat_id=chat.pk))
    return chat


def clean_group_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError("Give the group a name.")
    limit = group_name_limit()
    if len(name) > limit:
        raise ValidationError(f"Group names are at most {limit} characters.")
    return name


def group_name_limit() -> int:
    """CHAT_GROUP_NAME_MAX_LENGTH, but never past the column (PostgreSQL would refuse the row)."""
    return min(chat_setting("CHAT_GROUP_NAME_MAX_LENGTH"), Chat._meta.get_field("name").max_length)


def check_group_size(size: int) -> None:
    limit = chat_setting("CHAT_GROUP_MAX_MEMBERS")
    if size > limit:
        raise ValidationError(f"A group has at most {limit} members.")


def clean_message_body(body: str) -> str:
    """The body as stored, or a ValidationError; never cut short.

    Line breaks become "\n": browsers post a textarea's as "\r\n", which would count
    twice against the limit the page's counter shows. Null characters are refused, as
    Django's form fields refuse them: PostgreSQL cannot store them in text. So is text
    that is not Unicode (a lone surrogate, which a JSON frame can spell "\\ud800"):
    no database can store it.
    """
    body = (body or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if not body:
        raise ValidationError("Write a message before sending.")
    ProhibitNullCharactersValidator()(body)
    refuse_lone_surrogates(body)
    limit = chat_setting("CHAT_MAX_MESSAGE_LENGTH")
    if len(body) > limit:
        raise ValidationError(
            f"Messages are at most {limit} characters; this one has {len(body)}. Shorten it or split it in two."
        )
    return body


def send_message(
    *, chat: Chat, sender, body: str, client_id: str | None = None, reply_to_id: int | None = None
) -> Message:
    """Save a message, bump the chat in every inbox and count it unread for the others.

    The chat row is locked first so messages of one chat get their ids, `last_message`
    and previous-message links in one order; a client uses `prev_id` to notice a gap.
    With a `client_id` (1-64 characters the sending client picked for this message) a
    retried send returns the message stored the first time instead of storing it again.
    `reply_to_id` names a message of the same chat this one answers (see `reply_target`);
    @mentions of the chat's members are resolved here (see `resolve_mentions`).
    """
    return send_message_once(chat=chat, sender=sender, body=body, client_id=client_id, reply_to_id=reply_to_id)[0]


def send_message_within_rate(
    *,
    chat: Chat,
    sender,
    body: str,
    client_id: str | None = None,
    reply_to_id: int | None = None,
) -> Message:
    """`send_message`, counted against the sender's send rate (RateLimited past it).

    A retried client id is answered with the message stored the first time, and costs
    nothing: a client that resends after a lost ack is not pushed into the limit by it.
    """
    client_id = clean_client_id(client_id)
    over_rate = count_sends([sender])[0]
    try:
        message, stored_now = send_counted_message(
            chat=chat, sender=sender, body=body, client_id=client_id, reply_to_id=reply_to_id, over_rate=over_rate
        )
    except Exception:
        if over_rate is None:
            refund_sends([sender])  # refused or failed: nothing was stored
        raise
    if not stored_now and over_rate is None:
        refund_sends([sender])
    return message


def count_sends(senders: list) -> list[RateLimited | None]:
    """Count one send by each of `senders` against their send rate, in one round trip to
    the cache: for each, the refusal if it is over (that use already taken back), else None.

    A group of sends (`chat.realtime.sends`) counts them all before its transaction and
    takes back what it did not store after it (`refund_sends`), so the cache is never
    waited for while the group holds a chat's row lock, which every other server process's
    sends to that chat wait for."""
    return check_rates(action="send", keys=[sender.pk for sender in senders])


def refund_sends(senders: list) -> None:
    """Take back a counted send of each of `senders`: nothing new was stored for it (refused,
    failed, or a retried client id answered with the message stored the first time)."""
    for sender in senders:
        refund(action="send", key=sender.pk)


def send_counted_message(
    *,
    chat: Chat,
    sender,
    body: str,
    client_id: str,
    reply_to_id: int | None,
    over_rate: RateLimited | None,
    group: SendGroup | None = None,
    after: str = "",
) -> tuple[Message, bool]:
    """`send_message_once` for a send counted by `count_sends` (`over_rate`, its answer),
    with a clean client id: over the rate, only a retried client id is answered (with the
    message stored the first time). With `after`, OutOfOrder unless the sender's message
    of that client id is stored (a retry is answered all the same). Taking back the count
    of a send not stored now is the caller's (`refund_sends`)."""
    may_be_a_retry = (over_rate is not None or after) and client_id  # answered before either refusal
    if may_be_a_retry and (earlier := earlier_send(chat=chat, sender=sender, client_id=client_id)):
        return earlier, False
    if over_rate is not None:
        raise over_rate
    require_stored_after(chat=chat, sender=sender, after=after)
    return send_message_once(
        chat=chat, sender=sender, body=body, client_id=client_id, reply_to_id=reply_to_id, group=group
    )


def send_message_once(
    *,
    chat: Chat,
    sender,
    body: str,
    client_id: str | None = None,
    reply_to_id: int | None = None,
    group: SendGroup | None = None,
) -> tuple[Message, bool]:
    """`send_message`, and whether the message was stored now (False: a retried client id)."""
    body = clean_message_body(body)
    client_id = clean_client_id(client_id)
    reply_to = reply_target(chat=chat, reply_to_id=reply_to_id)
    mentions = resolve_mentions(chat=chat, sender=sender, body=body)
    try:
        with transaction.atomic():
            message = store_message(
                chat=chat,
                sender=sender,
                body=body,
                client_id=client_id,
                reply_to=reply_to,
                mentions=mentions,
                group=group,
            )
    except IntegrityError:
        # A retry of a message already stored (the unique client id): no second one, and
        # no query for the common case of a first send.
        if client_id and (earlier := earlier_send(chat=chat, sender=sender, client_id=client_id)):
            return earlier, False
        raise
    if group is not None:  # its savepoint is released: the message stays if the group commits
        group.stored(message)
    after_commit(lambda: metrics.count(metrics.MESSAGES_SENT))  # not for a group that is rolled back
    chat.last_message = message
    return message, True


class OutOfOrder(Exception):
    """A send names the message it must follow (`after`, that message's client id), and that
    message is not stored: it was refused, answered busy, or is still on its way. Nothing
    is stored; a client keeping its messages in order sends this one again once the one
    before it is answered. This lets a client send without waiting for each ack (a slow
    network, a quick typist) and still never have a message stored before an earlier one."""

    def __init__(self, after: str):
        super().__init__(f"The message this one follows ({after}) is not stored; send this one again after it.")
        self.after = after


def stored_in_chat(message: Message | None, chat_id: int) -> bool:
    return message is not None and message.chat_id == chat_id


def require_stored_after(*, chat: Chat, sender, after: str) -> None:
    """OutOfOrder unless the sender's message with client id `after` is stored in this chat."""
    if after and not Message.objects.filter(sender=sender, client_id=after, chat_id=chat.pk).exists():
        raise OutOfOrder(after)


def clean_client_id(client_id: str | None) -> str:
    if client_id in (None, ""):
        return ""
    if not isinstance(client_id, str) or len(client_id) > CLIENT_ID_MAX_LENGTH:
        raise ValidationError(f"client_id must be text of 1 to {CLIENT_ID_MAX_LENGTH} characters.")
    ProhibitNullCharactersValidator()(client_id)
    refuse_lone_surrogates(client_id)
    return client_id


def refuse_lone_surrogates(text: str) -> None:
    """A ValidationError for text with a lone surrogate: not Unicode, it cannot be encoded
    for any database (Django's form fields never produce one; a JSON frame can)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValidationError("Text must be valid Unicode.") from None


CLIENT_ID_MAX_LENGTH = 64


def earlier_send(*, chat: Chat, sender, client_id: str) -> Message | None:
    """The message this sender already stored under this client id, if it is in this chat."""
    message = Message.objects.filter(sender=sender, client_id=client_id).first()
    if message is not None:
        refuse_if_of_another_chat(message, chat_id=chat.pk)
    return message


def refuse_if_of_another_chat(earlier: Message, *, chat_id: int) -> None:
    """A client id names one message of one chat: a send to another chat under it is refused."""
    if earlier.chat_id != chat_id:
        raise ValidationError("This client_id was already used for a message in another chat.")


def store_message(
    *,
    chat: Chat,
    sender,
    body: str,
    client_id: str,
    reply_to: Message | None = None,
    mentions=(),
    group: SendGroup | None = None,
) -> Message:
    locked = group.locked_chat(chat.pk) if group is not None else None
    if locked is None:
        locked = locked_chats().only("id", "last_message_id", "direct_key").filter(pk=chat.pk).first()
        if locked is None:  # deleted since the caller looked
            raise Membership.DoesNotExist("Not a member of this chat.")
    refuse_direct_message_if_blocked(direct_key=locked.direct_key, sender=sender)
    prev_id = locked.last_message_id or 0
    message = Message.objects.create(
        chat_id=chat.pk, sender=sender, body=body, client_id=client_id, reply_to=reply_to, mentions=list(mentions)
    )
    note_mentions(message=message)
    is_member = Membership.objects.filter(chat_id=chat.pk, user=sender).update(
        last_read_message_id=message.pk, unread_count=0, is_hidden=False
    )
    if not is_member:  # left or removed since the caller looked: nothing is stored
        raise Membership.DoesNotExist("Not a member of this chat.")
    if group is None:
        record_new_messages(chat_id=chat.pk, messages=[message])
    else:
        group.locking(locked)
    after_commit(lambda: events.message_created(message=message, prev_id=prev_id))
    return message


class SendGroup:
    """Messages stored together in one transaction, and what they change once per chat.

    A message changes its chat's row (the last message) and the row of every other member
    (one more unread): in a room of 100 at 100 messages a second, one by one, that is
    10,000 row updates a second, each touching the row's indexes, and most of a send's
    database time. Sends stored in one transaction (`chat.realtime.sends`) go through
    this instead: the first of a chat locks its row, the others know it is locked (and
    its last message), and `finish()`, before the commit, updates each chat's row once
    and counts its messages unread in one UPDATE (and one per distinct count for the
    group's senders). Each send has a savepoint of its own (`send_message_once`); only
    once it is released is the message `stored()` here, so a send rolled back is never
    counted, and the row lock it took (released with it) is taken again by the next.
    """

    def __init__(self):
        self.chats: dict[int, Chat] = {}  # locked by a stored message: its current last message
        self.taking: Chat | None = None
        self.stored_by_chat: dict[int, list[Message]] = defaultdict(list)

    def locked_chat(self, chat_id: int) -> Chat | None:
        return self.chats.get(chat_id)

    def locking(self, chat: Chat) -> None:
        self.taking = chat

    def stored(self, message: Message) -> None:
        chat = self.chats.get(message.chat_id)
        if chat is None:
            chat = self.chats[message.chat_id] = self.taking
        chat.last_message_id = message.pk
        self.stored_by_chat[message.chat_id].append(message)

    def finish(self) -> None:
        for chat_id, messages in self.stored_by_chat.items():
            record_new_messages(chat_id=chat_id, messages=messages)


def store_sends_together(
    *, chat_id: int, sends: list[tuple], here: frozenset[int] | None = None
) -> list[tuple[Message | Exception, bool]]:
    """`send_message_once` for sends to one chat, inside the caller's transaction, in a
    few statements however many they are: for each, the message and whether it was stored
    now (False: a retried client id), or the exception that refused it.

    `here`: the people with a socket of this chat in this server process. The membership
    read under the lock covers them too, and the messages' events name those no longer
    members, so this process hands the messages to its own sockets straight away without
    reaching theirs (`chat.realtime.hub.send_to_room`).

    `sends`: (sender, body, clean client id, reply_to_id, after) in arrival order, each
    counted against the rate already; `after`, when not empty, is the client id of the
    sender's message this one must follow (`require_stored_after`): a send whose `after` is
    neither stored nor stored earlier in this group is refused with OutOfOrder.

    One by one, each send was a savepoint, its insert, its sender's read mark and the
    savepoint's release, all while holding the chat's row lock, which every other server
    process's sends to the chat wait for. Here, under the lock: the senders' memberships and
    the client ids already used are read once, the messages inserted together, and the chat,
    the senders' and the other members' rows updated once each. A client id taken meanwhile
    (a retry racing its first send through another chat) raises IntegrityError: the caller
    rolls back and stores the sends one by one.

    The client ids are read even though retries are rare: found by the unique constraint
    instead, every retry would roll its whole group back and store it again one send at a
    time, and a client resending one used client id could make everyone's sends wait.
    """
    results: list[tuple[Message | Exception, bool] | None] = [None] * len(sends)
    chat = Chat(pk=chat_id)
    prepared = []
    for index, (sender, body, client_id, reply_to_id, after) in enumerate(sends):
        try:
            body = clean_message_body(body)
            reply_to = reply_target(chat=chat, reply_to_id=reply_to_id)
            mentions = resolve_mentions(chat=chat, sender=sender, body=body)
        except ValidationError as refused:
            results[index] = (refused, False)
            continue
        prepared.append((index, sender, body, client_id, reply_to, mentions, after))
    if not prepared:
        return results
    locked = locked_chats().only("id", "last_message_id", "direct_key").filter(pk=chat_id).first()
    senders = {sender.pk for _, sender, *_ in prepared}
    members, outsiders = selectors.members_among(chat_id=chat_id, user_ids=senders, here=here)
    client_ids = {name for _, _, _, client_id, _, _, after in prepared for name in (client_id, after) if name}
    earlier = {
        (message.sender_id, message.client_id): message
        for message in Message.objects.filter(sender_id__in=senders, client_id__in=client_ids)
    }
    blocked: dict[int, Blocked | None] = {}
    new: list[Message] = []
    for index, sender, body, client_id, reply_to, mentions, after in prepared:
        if locked is None or sender.pk not in members:  # deleted, left or removed since the caller looked
            results[index] = (Membership.DoesNotExist("Not a member of this chat."), False)
            continue
        if sender.pk not in blocked:
            try:
                refuse_direct_message_if_blocked(direct_key=locked.direct_key, sender=sender)
                blocked[sender.pk] = None
            except Blocked as refused:
                blocked[sender.pk] = refused
        if blocked[sender.pk] is not None:
            results[index] = (blocked[sender.pk], False)
            continue
        if client_id and (sender.pk, client_id) in earlier:  # a retry (or the same send twice in the group)
            message = earlier[(sender.pk, client_id)]
            try:
                refuse_if_of_another_chat(message, chat_id=chat_id)
                results[index] = (message, False)
            except ValidationError as refused:
                results[index] = (refused, False)
            continue
        if after and not stored_in_chat(earlier.get((sender.pk, after)), chat_id):
            results[index] = (OutOfOrder(after), False)
            continue
        message = Message(
            chat_id=chat_id, sender=sender, body=body, client_id=client_id, reply_to=reply_to, mentions=list(mentions)
        )
        new.append(message)
        results[index] = (message, True)
        if client_id:
            earlier[(sender.pk, client_id)] = message
    if new:
        insert_in_order(new)
        prev_id = locked.last_message_id or 0
        stored_count = len(new)
        after_commit(lambda: metrics.count(metrics.MESSAGES_SENT, stored_count))
        for message in new:
            note_mentions(message=message)
        after_commit(lambda: events.messages_created(messages=new, prev_id=prev_id, outsiders=outsiders))
        record_sent_together(chat_id=chat_id, messages=new)
    return results


def insert_in_order(messages: list[Message]) -> None:
    """Insert the messages, their ids in list order: in one statement where the database
    returns the new ids from it (PostgreSQL; SQLite 3.35 and later)."""
    if connection.features.can_return_rows_from_bulk_insert:
        Message.objects.bulk_create(messages)
    else:
        for message in messages:
            message.save(force_insert=True)


def record_sent_together(*, chat_id: int, messages: list[Message]) -> None:
    """`record_new_messages` for messages stored together (`store_sends_together`), with the
    senders' own read marks, which a send stored alone sets as it is stored: each sender has
    read up to their last one, and has the ones after it unread."""
    note_last_message(chat_id=chat_id, last=messages[-1])
    sender_ids = [message.sender_id for message in messages]
    count_unread_for_the_others(chat_id=chat_id, sender_ids=sender_ids)
    mark_read_by_senders(chat_id=chat_id, messages=messages)


def mark_read_by_senders(*, chat_id: int, messages: list[Message]) -> None:
    """Each sender of messages stored together has read up to their last one, and has those
    stored after it unread: one UPDATE for all of them.

    A group with one sender (every group of a quiet room) gets a plain UPDATE: the CASE
    for many senders took three times as long to build and run (0.45 ms against 0.13 on
    SQLite), on the one database thread every socket of the process waits for."""
    last_by_sender = {message.sender_id: message.pk for message in messages}
    if len(last_by_sender) == 1:  # theirs is the last message: nothing after it is unread
        ((sender_id, last_id),) = last_by_sender.items()
        Membership.objects.filter(chat_id=chat_id, user_id=sender_id).update(
            last_read_message_id=last_id, unread_count=0, is_hidden=False
        )
        return
    later_by_sender = stored_after_own([message.sender_id for message in messages])
    Membership.objects.filter(chat_id=chat_id, user_id__in=last_by_sender).update(
        last_read_message_id=Case(
            *(When(user_id=user, then=Value(pk)) for user, pk in last_by_sender.items()),
            default=F("last_read_message_id"),
            output_field=Membership._meta.get_field("last_read_message_id"),
        ),
        unread_count=Case(
            *(When(user_id=user, then=Value(later)) for user, later in later_by_sender.items()),
            default=F("unread_count"),
            output_field=Membership._meta.get_field("unread_count"),
        ),
        is_hidden=False,
    )


def record_new_messages(*, chat_id: int, messages: list[Message]) -> None:
    """What messages just stored in a chat (in the order stored) change besides themselves:
    the chat's last message and activity, and the members' unread counts."""
    note_last_message(chat_id=chat_id, last=messages[-1])
    count_unread(chat_id=chat_id, sender_ids=[message.sender_id for message in messages])


def note_last_message(*, chat_id: int, last: Message) -> None:
    Chat.objects.filter(pk=chat_id).update(last_message=last, last_activity_at=last.created_at)


def count_unread(*, chat_id: int, sender_ids: list[int]) -> None:
    """Count messages just stored in a chat, by `sender_ids` in the order stored, unread.

    Members who sent none of them get them all. A sender's own send marked the chat read
    up to their message, so they get only the messages stored after their last one.
    """
    count_unread_for_the_others(chat_id=chat_id, sender_ids=sender_ids)
    senders_by_later = defaultdict(list)
    for sender_id, later in stored_after_own(sender_ids).items():
        if later:
            senders_by_later[later].append(sender_id)
    for later, ids in senders_by_later.items():
        Membership.objects.filter(chat_id=chat_id, user_id__in=ids).update(unread_count=F("unread_count") + later)


def count_unread_for_the_others(*, chat_id: int, sender_ids: list[int]) -> None:
    """The members who sent none of the messages just stored (by `sender_ids`) get them all
    unread, and see the chat in their inbox again if they had hidden it.

    On SQLite, two UPDATEs, the second only changing the rows of those who hid it:
    `is_hidden` set on every member made SQLite rewrite each one's entry of the inbox index
    (`membership_user_visible`), ten times the cost of the count alone (1.2 ms against 0.11
    for a room of 100). PostgreSQL touches no index when none of the values it holds change
    (a heap-only update, the new row version on the same page), so there one UPDATE does
    both, a round trip less.
    """
    others = Membership.objects.filter(chat_id=chat_id).exclude(user_id__in=set(sender_ids))
    if connection.vendor == "postgresql":
        others.update(unread_count=F("unread_count") + len(sender_ids), is_hidden=False)
        return
    others.update(unread_count=F("unread_count") + len(sender_ids))
    others.filter(is_hidden=True).update(is_hidden=False)


def stored_after_own(sender_ids: list[int]) -> dict[int, int]:
    """For each sender of messages stored in this order, how many were stored after their last one."""
    return {sender_id: len(sender_ids) - 1 - position for position, sender_id in enumerate(sender_ids)}


# --- replies, typing and @mentions ----------------------------------------------------


def reply_target(*, chat: Chat, reply_to_id) -> Message | None:
    """The message a reply answers, with its sender (its quote is rendered from it); a
    ValidationError for anything but a message of this same chat."""
    if reply_to_id in (None, ""):
        return None
    if isinstance(reply_to_id, bool) or not isinstance(reply_to_id, int) or not 0 < reply_to_id <= MAX_ID:
        raise ValidationError("reply_to must be the id of a message.")
    original = Message.objects.select_related("sender").filter(pk=reply_to_id, chat_id=chat.pk).first()
    if original is None:
        raise ValidationError("You can only reply to a message in this chat.")
    return original


# An "@" that starts a mention: at the start or after a space or punctuation, not inside
# a word or an e-mail address ("ann@example.com" mentions nobody).
MENTION_START = re.compile(r"(?<![\w@])@")


def resolve_mentions(*, chat: Chat, sender, body: str) -> list[list[int]]:
    """Each "@name" in a group message that names another member, as [start, end, user_id].

    A member is named by their display name or username, case-insensitively, and the
    longest name wins ("@Ann Lee" over "@Ann"). Anything else after an "@" (someone not
    in the group, an e-mail address) stays plain text. Direct chats have no mentions.
    One query, only for a body with an "@" in it.
    """
    if "@" not in body:
        return []
    names = selectors.mention_names(chat_id=chat.pk, excluding=sender.pk)
    spans, taken_until = [], 0
    for start in (match.start() for match in MENTION_START.finditer(body)):
        if start < taken_until:
            continue
        for name, user_id in names:
            end = start + 1 + len(name)
            following = body[end : end + 1]
            if body[start + 1 : end].casefold() == name.casefold() and not (following.isalnum() or following == "_"):
                spans.append([start, end, user_id])
                taken_until = end
                break
    return spans


def note_mentions(*, message: Message) -> None:
    """Mark the chat in the inbox of each member this message mentions, until they read it."""
    mentioned = {user_id for _, _, user_id in message.mentions}
    if mentioned:
        Membership.objects.filter(chat_id=message.chat_id, user_id__in=mentioned).update(
            last_mention_message_id=message.pk
        )


def signal_typing(*, chat_id: int, user, here: frozenset[int] | None = None) -> None:
    """Tell the other people in the room that this person is typing.

    Never stored: viewers forget it on their own a few seconds after the last signal, or
    when the person's message arrives. Within the "typing" rate (RateLimited past it) and
    for members only (Membership.DoesNotExist), as every other room frame.

    `here`: the people with a socket of this chat in this server process, as for a send
    (`store_sends_together`). The same query reads which of them are still members, and this
    process's sockets get the frame straight away, as they get this person's next message,
    which must not overtake it. No row lock: a removal committed before this read is seen
    by it, and one committed after comes after the signal.
    """
    refusal = signal_typing_many([Typing(chat_id, user, here)])[Typing(chat_id, user, here)]
    if refusal is not None:
        raise refusal


class Typing(NamedTuple):
    """One "is typing" signal: `signal_typing`'s arguments."""

    chat_id: int
    user: Any
    here: frozenset[int] | None = None


def signal_typing_many(signals: list[Typing]) -> dict[Typing, Exception | None]:
    """`signal_typing` for the signals of many sockets at once: counted against the rate in
    one round trip, their memberships (and those of each chat's `here`) read in one query.
    Each signal's refusal (RateLimited, Membership.DoesNotExist), or None once it went out.
    A busy room's typists so cost the sockets' database thread one trip, not one each."""
    over_rate = check_rates(action="typing", keys=[signal.user.pk for signal in signals])
    asked: dict[int, set[int]] = defaultdict(set)
    for signal, over in zip(signals, over_rate, strict=True):
        if over is None:
            asked[signal.chat_id] |= {signal.user.pk, *(signal.here or ())}
    members = selectors.members_of_chats(asked)
    refusals: dict[Typing, Exception | None] = {}
    for signal, over in zip(signals, over_rate, strict=True):
        in_chat = members.get(signal.chat_id, set())
        if over is None and signal.user.pk not in in_chat:
            over = Membership.DoesNotExist("Not a member of this chat.")
        refusals[signal] = over
        if over is None:
            outsiders = None if signal.here is None else frozenset(signal.here - in_chat)
            name = selectors.display_name(signal.user)
            events.typing(chat_id=signal.chat_id, user_id=signal.user.pk, name=name, outsiders=outsiders)
    return refusals


# --- read positions -------------------------------------------------------------------


def mark_read(*, chat: Chat, user, up_to_id: int | None = None) -> int:
    """Mark the chat read up to a message (default: the latest) and return its unread count."""
    key = (chat.pk, user.pk)
    unread = mark_read_many(marks={key: LATEST if up_to_id is None else up_to_id})
    if key not in unread:
        raise Membership.DoesNotExist("Not a member of this chat.")
    return unread[key]


# Larger than any message id: "read up to the latest message".
LATEST = MAX_ID
# Unread counts come from the messages after the lowest new read position; past this many
# rows a member far behind is counted by the database instead.
READ_TAIL_LIMIT = 2000


def mark_read_many(*, marks: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    """Mark many (chat id, user id) pairs read up to message ids, in one transaction.

    Room sockets of a process batch their read marks through this (a busy room has many
    viewers). Memberships are locked before the messages are counted, so a message sent
    at the same moment is either counted here or added afterwards by `send_message`,
    never lost. Returns the unread count of each pair that is a membership.
    """
    by_chat: dict[int, dict[int, int]] = {}
    for (chat_id, user_id), up_to in marks.items():
        by_chat.setdefault(chat_id, {})[user_id] = up_to
    unread_by_key, changed = {}, []
    with transaction.atomic():
        for chat_id, up_to_by_user in sorted(by_chat.items()):  # chats locked in id order, as sends lock them
            for membership, unread in read_positions(chat_id=chat_id, up_to_by_user=up_to_by_user):
                unread_by_key[(chat_id, membership.user_id)] = unread
                if (membership.new_read_id, unread) != (membership.last_read_message_id, membership.unread_count):
                    membership.last_read_message_id, membership.unread_count = membership.new_read_id, unread
                    changed.append(membership)
        if changed:
            save_read_positions(changed)
            after_commit(lambda: events.unread_changed(memberships=changed))
    return unread_by_key


def save_read_positions(memberships: list[Membership]) -> None:
    """One UPDATE per distinct (read position, unread count).

    The viewers of a busy room all read up to the same message, so a batch of a hundred
    is usually one statement; `bulk_update` would build a CASE per row and field.
    """
    ids_by_position: dict[tuple[int, int], list[int]] = {}
    for membership in memberships:
        position = (membership.last_read_message_id, membership.unread_count)
        ids_by_position.setdefault(position, []).append(membership.pk)
    for (read_id, unread), ids in ids_by_position.items():
        Membership.objects.filter(pk__in=ids).update(last_read_message_id=read_id, unread_count=unread)


def read_positions(*, chat_id: int, up_to_by_user: dict[int, int]):
    """(locked membership with `new_read_id`, its unread count) for these members of a chat.

    The chat's row is locked first, as a send to the chat locks it before the memberships it
    updates (the senders' read marks, everyone else's unread count): the two wait for each
    other in turn. Locking the memberships first, a batch of read marks could hold one that
    a send was about to update while waiting for one the send held, a deadlock that
    PostgreSQL breaks after a second by failing one of them.
    """
    latest = locked_chats().filter(pk=chat_id).values_list("last_message_id", flat=True).first() or 0
    memberships = list(Membership.objects.select_for_update().filter(chat_id=chat_id, user_id__in=up_to_by_user))
    for membership in memberships:
        target = min(up_to_by_user[membership.user_id], latest)
        membership.new_read_id = max(membership.last_read_message_id, target)
    floor = min((m.new_read_id for m in memberships), default=latest)
    tail = []
    if floor < latest:
        tail = list(
            # Deleted for everyone: still a row, no longer anything to read.
            Message.objects.filter(chat_id=chat_id, pk__gt=floor, deleted_at__isnull=True)
            .order_by("pk")
            .values_list("pk", "sender_id")[: READ_TAIL_LIMIT + 1]
        )
    for membership in memberships:
        if membership.new_read_id >= latest:
            unread = 0
        elif len(tail) <= READ_TAIL_LIMIT:
            unread = sum(1 for pk, sender_id in tail if pk > membership.new_read_id and sender_id != membership.user_id)
        else:
            later = Message.objects.filter(chat_id=chat_id, pk__gt=membership.new_read_id, deleted_at__isnull=True)
            unread = later.exclude(sender_id=membership.user_id).count()
        yield membership, unread


def rename_group(*, chat: Chat, actor, name: str) -> Chat:
    require_group_admin(chat=chat, user=actor)
    name = clean_group_name(name)
    if name != chat.name:
        chat.name = name
        chat.save(update_fields=["name"])
        user_ids = member_ids(chat)
        after_commit(lambda: events.chat_renamed(chat_id=chat.pk, name=name, user_ids=user_ids))
    return chat


def add_members(*, chat: Chat, actor, users: Iterable) -> list:
    """Add people to a group; people already in it are left as they are."""
    require_group_admin(chat=chat, user=actor)
    users = list(users)
    if len(users) > chat_setting("CHAT_MAX_MEMBERS_PER_REQUEST"):
        raise ValidationError(f"Add at most {chat_setting('CHAT_MAX_MEMBERS_PER_REQUEST')} people at a time.")
    with transaction.atomic():
        # Under the chat's lock, as a send takes it: a message stored meanwhile is either read
        # below, or stored after the new memberships and counted unread for them.
        last_id = locked_chats().filter(pk=chat.pk).values_list("last_message_id", flat=True).first() or 0
        existing = set(member_ids(chat))
        new = [user for user in {user.pk: user for user in users}.values() if user.pk not in existing]
        check_group_size(len(existing) + len(new))
        # New members start with everything read: the history is theirs to scroll, not unread.
        Membership.objects.bulk_create(
            [Membership(chat=chat, user=user, last_read_message_id=last_id) for user in new],
            ignore_conflicts=True,
        )
        new_ids = [user.pk for user in new]
        FormerMembership.objects.filter(chat=chat, user_id__in=new_ids).delete()
        after_commit(lambda: events.chat_list_changed(user_ids=new_ids, chat_id=chat.pk))
    return new


def remove_member(*, chat: Chat, actor, user) -> None:
    """An admin removes someone; their open room closes and the chat leaves their list."""
    require_group_admin(chat=chat, user=actor)
    if user.pk == actor.pk:
        raise ValidationError("Use “Leave group” to leave.")
    with transaction.atomic():
        # As a send or a change locks it first: the group's deletion, which locks it and then
        # deletes the memberships, waits for this rather than for the membership it deletes.
        locked_chats().only("id").filter(pk=chat.pk).first()
        deleted, _ = Membership.objects.filter(chat=chat, user=user).delete()
        if deleted:
            record_departure(chat=chat, user=user, reason=FormerMembership.Reason.REMOVED)
            revoke_access(chat_id=chat.pk, user_ids=[user.pk])


def leave_group(*, chat: Chat, user) -> bool:
    """Leave a group. Returns True when the group was deleted because nobody was left.

    When the last admin leaves, the longest-standing member becomes admin, so a group
    always has one.
    """
    if not chat.is_group:
        raise ValidationError("Only groups can be left; delete a direct chat instead.")
    with transaction.atomic():
        Chat.objects.select_for_update().only("id").get(pk=chat.pk)  # one leaver at a time
        if Membership.objects.filter(chat=chat, user=user).delete()[0]:
            record_departure(chat=chat, user=user, reason=FormerMembership.Reason.LEFT)
        revoke_access(chat_id=chat.pk, user_ids=[user.pk])
        remaining = Membership.objects.filter(chat=chat)
        if not remaining.exists():
            chat.delete()
            return True
        if not remaining.filter(role=Membership.Role.ADMIN).exists():
            successor = remaining.order_by("joined_at", "pk").first()
            Membership.objects.filter(pk=successor.pk).update(role=Membership.Role.ADMIN)
    return False


def record_departure(*, chat: Chat, user, reason: str) -> None:
    """Remember that they were in the chat, so its pages tell them why they cannot open it."""
    FormerMembership.objects.update_or_create(
        chat=chat, user=user, defaults={"reason": reason, "left_at": timezone.now()}
    )


def soft_delete_chat(*, chat: Chat, user) -> None:
    """Hide the chat and its history for this user only; a later message brings it back."""
    with transaction.atomic():
        # Locked like send_message does, so a message sent meanwhile is either hidden with
        # the rest or arrives after and shows the chat again, never hidden unread.
        locked = locked_chats().only("id", "last_message_id").get(pk=chat.pk)
        last_id = locked.last_message_id or 0
        Membership.objects.filter(chat=chat, user=user).update(
            is_hidden=True, cleared_message_id=last_id, last_read_message_id=last_id, unread_count=0
        )
        after_commit(lambda: events.chat_list_changed(user_ids=[user.pk], chat_id=chat.pk))


def delete_group(*, chat: Chat, actor) -> None:
    """Delete a group and its messages for everyone (admins only)."""
    require_group_admin(chat=chat, user=actor)
    delete_chats(chat_ids=[chat.pk])


def delete_chats(*, chat_ids: Iterable[int]) -> None:
    """Delete chats outright, with their messages, for everyone (a group's admin, the site's
    staff in the admin); their open rooms are closed as for a removed member.

    Each chat's row is locked first, as sends, changes and removals lock it first: a change
    holding the lock and waiting for a message row this had already deleted would otherwise
    wait for it while it waits for the lock (a deadlock, which PostgreSQL breaks by failing
    one). FOR UPDATE, as the row's deletion locks it in the end: a row pointing at the chat
    inserted meanwhile (a socket's presence) waits, and then finds the chat gone, instead of
    failing this deletion. In id order, so two deletions of the same chats take turns."""
    with transaction.atomic():
        for chat in Chat.objects.select_for_update().filter(pk__in=chat_ids).order_by("pk").only("id"):
            revoke_access(chat_id=chat.pk, user_ids=member_ids(chat), deleted=True)
            chat.delete()


def delete_messages(*, message_ids: Iterable[int]) -> None:
    """Delete messages outright (the site's staff, in the admin). Their chats are locked
    first, in id order, as a change of one of their messages locks its chat first (see
    `delete_chats`); FOR NO KEY UPDATE, as a change: the chats stay."""
    with transaction.atomic():
        messages = Message.objects.filter(pk__in=message_ids)
        list(locked_chats().filter(pk__in=messages.values("chat_id")).order_by("pk").values_list("pk", flat=True))
        messages.delete()


def purge_deleted_chats(*, older_than_days: int = 0, dry_run: bool = False) -> list[int]:
    """Hard-delete chats that every member has deleted for themselves.

    `older_than_days` keeps chats whose latest activity is more recent than that.
    Returns the ids of the chats deleted (or that would be, with `dry_run`).
    """
    cutoff = timezone.now() - timezone.timedelta(days=older_than_days)
    chats = Chat.objects.annotate(
        members=Count("memberships"),
        visible=Count("memberships", filter=Q(memberships__is_hidden=False)),
    ).filter(members__gt=0, visible=0, last_activity_at__lte=cutoff)
    ids = list(chats.values_list("pk", flat=True))
    if ids and not dry_run:
        with transaction.atomic():
            # Lock the chats (as send_message does) and check again: a message since the
            # first look has un-hidden its chat, and one sent now waits for this to finish.
            list(Chat.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))
            still_deleted = Chat.objects.filter(pk__in=ids, last_activity_at__lte=cutoff).exclude(
                memberships__is_hidden=False
            )
            ids = list(still_deleted.values_list("pk", flat=True))
            Chat.objects.filter(pk__in=ids).delete()
    return ids


def revoke_access(*, chat_id: int, user_ids: list[int], deleted: bool = False) -> None:
    """After commit, close these people's open rooms of the chat and take their sockets out
    of its group. Who has a socket there is looked up now, before a deleted chat takes its
    presence rows with it."""
    socket_user_ids = presence.room_user_ids(chat_id=chat_id, user_ids=None if deleted else user_ids)
    after_commit(
        lambda: events.access_revoked(
            chat_id=chat_id, user_ids=user_ids, socket_user_ids=socket_user_ids, deleted=deleted
        )
    )


def require_group_admin(*, chat: Chat, user) -> None:
    if not chat.is_group:
        raise PermissionDenied("Only groups have admins.")
    if not Membership.objects.filter(chat=chat, user=user, role=Membership.Role.ADMIN).exists():
        raise PermissionDenied("Only group admins can do this.")


def member_ids(chat: Chat) -> list[int]:
    return list(Membership.objects.filter(chat=chat).values_list("user_id", flat=True))


# --- people: mute a chat, block a person ----------------------------------------------


def set_chat_muted(*, chat: Chat, user, muted: bool) -> None:
    """Mute or unmute a chat for one member: its unread messages still count on its own
    row, but not in their total badge. Their other tabs hear `inbox.muted`."""
    with transaction.atomic():
        if not Membership.objects.filter(chat=chat, user=user).update(is_muted=muted):
            raise Membership.DoesNotExist("Not a member of this chat.")
        after_commit(lambda: events.chat_muted(user_id=user.pk, chat_id=chat.pk, muted=muted))


class Blocked(PermissionDenied):
    """A message or a new direct chat refused because of a block.

    Its text is all the refused person learns: that they cannot message this person.
    Not that they were blocked, nor since when; the blocker is told their own block.
    """


def block_user(*, blocker, blocked) -> bool:
    """`blocker` blocks `blocked`; returns False when they already had. Their tabs hear `inbox.blocked`."""
    if blocker.pk == blocked.pk:
        raise ValidationError("You cannot block yourself.")
    with transaction.atomic():
        _, created = Block.objects.get_or_create(blocker=blocker, blocked=blocked)
        if created:
            after_commit(lambda: events.block_changed(blocker_id=blocker.pk, blocked_id=blocked.pk, blocked=True))
    return created


def unblock_user(*, blocker, blocked) -> bool:
    """Lift a block; returns False when there was none."""
    with transaction.atomic():
        deleted, _ = Block.objects.filter(blocker=blocker, blocked=blocked).delete()
        if deleted:
            after_commit(lambda: events.block_changed(blocker_id=blocker.pk, blocked_id=blocked.pk, blocked=False))
    return bool(deleted)


def refuse_direct_message_if_blocked(*, direct_key: str | None, sender) -> None:
    """In a direct chat (its `direct_key` names both people) a block either way stops
    messages: checked at send time, so open sockets obey a block at once. Groups, whose
    key is None, cost no query."""
    if not direct_key:
        return
    other_id = next(int(pk) for pk in direct_key.split(":") if int(pk) != sender.pk)
    blockers = set(
        Block.objects.filter(
            Q(blocker=sender, blocked_id=other_id) | Q(blocker_id=other_id, blocked=sender)
        ).values_list("blocker_id", flat=True)
    )
    if sender.pk in blockers:
        raise Blocked("You blocked this person. Unblock them on the chat’s info page to send messages.")
    if blockers:
        raise Blocked("You can’t send messages to this person.")


def refuse_direct_chat_if_blocked(*, user, other) -> None:
    """Someone blocked cannot open a direct chat with the person who blocked them (nor bring
    back one they had deleted for themselves)."""
    if Block.objects.filter(blocker=other, blocked=user).exists():
        raise Blocked("You can’t start a chat with this person.")


# --- message changes: edit, delete for everyone, reactions, reports -----------------------
#
# Every change of a message takes the chat's next change cursor (`Chat.change_seq`) under
# the chat's row lock, as send_message locks it, and stores it on the message: cursors are
# handed out in commit order, so a room that has seen changes up to N and asks for those
# after N (selectors.messages_changed_since) misses none. Each sends its one event after
# commit (events.message_edited, message_deleted, reactions_changed).


def edit_message(*, message: Message, user, body: str) -> Message:
    """Change the text of one's own message, within CHAT_EDIT_WINDOW_SECONDS of sending it."""
    body = clean_message_body(body)
    with transaction.atomic():
        message, chat = lock_for_change(message, member=user)
        require_editable(message=message, user=user)
        if body != message.body:
            mentions = resolve_mentions(chat=chat, sender=user, body=body)
            record_change(message, chat, body=body, edited_at=timezone.now(), mentions=mentions)
            is_last = chat.last_message_id == message.pk
            after_commit(lambda: events.message_edited(message=message, is_last=is_last))
    return message


def require_editable(*, message: Message, user) -> None:
    """PermissionDenied (not theirs, the edit window is over) or ValidationError (deleted)."""
    if message.sender_id != user.pk:
        raise PermissionDenied("You can only edit your own messages.")
    if message.deleted_at is not None:
        raise ValidationError("This message was deleted.")
    if not edit_window_open(message):
        raise PermissionDenied(f"Messages can be edited for {edit_window_text()} after sending; not this one any more.")


def edit_window_open(message: Message) -> bool:
    window = chat_setting("CHAT_EDIT_WINDOW_SECONDS")
    return not window or timezone.now() - message.created_at <= timezone.timedelta(seconds=window)


def edit_window_text() -> str:
    return wait_text(int(chat_setting("CHAT_EDIT_WINDOW_SECONDS")))


def delete_message(*, message: Message, actor, as_staff: bool = False) -> Message:
    """Delete a message for everyone: its text and reactions go, a "deleted" placeholder stays.

    The sender may, a group admin may for any message of the group, and site staff with
    the right to change messages may (from the admin, `as_staff`). The members who had
    not read it get it taken off their unread counts. Deleting it again changes nothing.
    """
    with transaction.atomic():
        message, chat = lock_for_change(message)
        if as_staff:
            if not (actor.is_staff and actor.has_perm("chat.change_message")):
                raise PermissionDenied("Only site staff can delete messages from the admin.")
        else:
            membership = require_member(chat_id=chat.pk, user=actor)
            require_deletable(message=message, chat=chat, membership=membership)
        if message.deleted_at is not None:
            return message
        Reaction.objects.filter(message=message).delete()
        record_change(message, chat, body="", deleted_at=timezone.now())
        if as_staff:
            Report.objects.filter(message=message, resolved_at__isnull=True).update(resolved_at=message.deleted_at)
        uncounted = uncount_unread(message)
        is_last = chat.last_message_id == message.pk
        after_commit(lambda: events.message_deleted(message=message, is_last=is_last, memberships=uncounted))
    return message


def require_deletable(*, message: Message, chat: Chat, membership: Membership) -> None:
    is_group_admin = chat.kind == Chat.Kind.GROUP and membership.is_admin
    if message.sender_id != membership.user_id and not is_group_admin:
        raise PermissionDenied("Only its sender or a group admin can delete this message.")


def uncount_unread(message: Message) -> list[Membership]:
    """Take a deleted message off the unread counts of the members it counted for (those
    who had not read it, other than its sender); returns their memberships, updated."""
    counted = Membership.objects.filter(
        chat_id=message.chat_id,
        last_read_message_id__lt=message.pk,
        cleared_message_id__lt=message.pk,
        unread_count__gt=0,
    ).exclude(user_id=message.sender_id)
    ids = list(counted.values_list("pk", flat=True))
    if not ids:
        return []
    # The conditions again in the UPDATE: checked under the row lock, so a read mark that
    # moved past the message meanwhile (and counted without it) is not taken down twice.
    Membership.objects.filter(pk__in=ids, unread_count__gt=0, last_read_message_id__lt=message.pk).update(
        unread_count=F("unread_count") - 1
    )
    return list(Membership.objects.filter(pk__in=ids))


def toggle_reaction(*, message: Message, user, emoji: str, on: bool | None = None) -> Message:
    """Add the person's `emoji` to the message, or take it back; returns the message with its
    new change cursor.

    `on` says which (True: add it, False: take it back), so that the same request sent twice
    (a retry whose answer was lost, two tabs) ends as the person meant: a reaction already so
    changes nothing (no cursor taken, no frame), and the message is returned as given.
    Without it, the reaction is toggled.

    Every send and change of the chat waits for the chat's lock, on every server process, so a
    reaction holds it for as few statements as it can. One added is inserted before the lock:
    no one else waits for a row only this transaction sees. The lock is taken by the statement
    that takes the chat's next change cursor. Then the message is stamped with it, by a
    statement that finds it only while it is not deleted and the reactor is a member: run after
    the lock, it sees a deletion or a removal that came meanwhile, and then nothing is kept.
    One taken back is deleted under the lock, as a deleted message's reactions are (before it,
    the two could wait for each other). Found gone by then (another tab of the person's took it
    back meanwhile), it stays gone: both meant to take it back. Adding it again there would
    also wait, under the lock, for a third tab's insert of it, which waits for the lock.

    The message returned, and the one the room's frame shows, is the message as the stamp
    stored it: its text is no older than this change (an edit may have come between the
    caller's read and the lock), and the frame needs no read of it after the commit.
    """
    emoji = clean_reaction(emoji)
    if message.deleted_at is not None:
        raise ValidationError("This message was deleted.")
    mine = Reaction.objects.filter(message_id=message.pk, user=user, emoji=emoji)
    if on is False and not mine.exists():
        return message  # taken back already
    with transaction.atomic():
        added = on is not False and reaction_added(message, user, emoji)
        if on is True and not added:
            return message  # there already: nothing inserted, nothing to roll back
        change_seq = take_change_cursor(message.chat_id)
        if change_seq is None:
            raise Membership.DoesNotExist("Not a member of this chat.")
        if not added:
            mine.delete()
        stored = stamp_reaction(message, change_seq, reactor=user)
        after_commit(lambda: events.reactions_changed(message=stored))
    return stored


def reaction_added(message: Message, user, emoji: str) -> bool:
    """Add the reaction unless the person has it already: whether this added it (False: they
    are taking it back, or another tab of theirs just added it).

    One statement where the database can tell (INSERT ... ON CONFLICT DO NOTHING RETURNING:
    PostgreSQL, SQLite 3.35 and later), instead of a read, a savepoint, the insert and the
    savepoint's release: each a round trip on the thread every room socket's changes wait for.
    """
    if not returns_rows_from_writes():
        try:
            with transaction.atomic():
                Reaction.objects.create(message_id=message.pk, user=user, emoji=emoji)
        except IntegrityError:
            return False
        return True
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    table = connection.ops.quote_name(Reaction._meta.db_table)
    with connection.cursor() as cursor:  # bulk_create(ignore_conflicts=True) does not say what it inserted
        sql = (
            f"INSERT INTO {table} (message_id, user_id, emoji, created_at) VALUES (%s, %s, %s, %s) "  # noqa: S608 - the model's names
            "ON CONFLICT (message_id, user_id, emoji) DO NOTHING RETURNING id"
        )
        cursor.execute(sql, [message.pk, user.pk, emoji, created_at])
        return cursor.fetchone() is not None


def stamp_reaction(message: Message, change_seq: int, *, reactor) -> Message:
    """Give the message the change cursor just taken, if it is still not deleted and the
    reactor still a member, and return it as stored now (the chat is locked: no edit comes
    between); else raise what the caller would have (which rolls the cursor back).

    Where the database returns rows from writes, the stamp's own UPDATE returns the row;
    elsewhere (SQLite before 3.35, whose one writer serializes the chat's changes anyway)
    it is read after the stamp."""
    if returns_rows_from_writes():
        # On the transaction's connection: raw() would ask the router for a database to read.
        stamp = Message.objects.raw(*stamp_returning_message(message, change_seq, reactor), using=connection.alias)
        stored = next(iter(stamp), None)
    else:
        still_there = (
            Exists(Membership.objects.filter(chat_id=message.chat_id, user=reactor)),
            Q(chat_id=message.chat_id, deleted_at__isnull=True),
        )
        stamped = stamp_message(message, change_seq, only_if=still_there)
        stored = Message.objects.using(connection.alias).get(pk=message.pk) if stamped else None
    if stored is None:
        if not Message.objects.filter(pk=message.pk, deleted_at__isnull=True).exists():  # or deleted outright
            raise ValidationError("This message was deleted.")
        raise Membership.DoesNotExist("Not a member of this chat.")
    if stored.sender_id == message.sender_id and Message.sender.is_cached(message):
        stored.sender = message.sender  # the frame's name without reading the sender again
    return stored


def stamp_returning_message(message: Message, change_seq: int, reactor) -> tuple[str, list]:
    """The stamp of `stamp_reaction` as one UPDATE ... RETURNING every column of the message,
    for Message.objects.raw (which converts the columns as a query's): Django's update()
    returns a count."""
    quote = connection.ops.quote_name
    messages, memberships = quote(Message._meta.db_table), quote(Membership._meta.db_table)
    columns = ", ".join(quote(field.column) for field in Message._meta.concrete_fields)
    sql = (
        f"UPDATE {messages} SET {quote('change_seq')} = %s "  # noqa: S608 - the models' names
        f"WHERE {quote('id')} = %s AND {quote('chat_id')} = %s AND {quote('deleted_at')} IS NULL "
        f"AND EXISTS (SELECT 1 FROM {memberships} WHERE {memberships}.{quote('chat_id')} = %s "
        f"AND {memberships}.{quote('user_id')} = %s) RETURNING {columns}"
    )
    return sql, [change_seq, message.pk, message.chat_id, message.chat_id, reactor.pk]


def clean_reaction(emoji) -> str:
    allowed = list(chat_setting("CHAT_REACTIONS"))
    if not isinstance(emoji, str) or emoji not in allowed:
        raise ValidationError(f"React with one of {' '.join(allowed)}.")
    return emoji


def report_message(*, message: Message, reporter, reason: str, details: str = "") -> Report:
    """Tell the site's staff about someone else's message; once per person and message."""
    if reason not in Report.Reason.values:
        raise ValidationError("Choose a reason for the report.")
    details = (details or "").strip()
    ProhibitNullCharactersValidator()(details)
    if len(details) > REPORT_DETAILS_MAX_LENGTH:
        raise ValidationError(f"Say it in at most {REPORT_DETAILS_MAX_LENGTH} characters.")
    require_member(chat_id=message.chat_id, user=reporter)
    if message.sender_id == reporter.pk:
        raise ValidationError("You cannot report your own message.")
    if message.deleted_at is not None:
        raise ValidationError("This message was deleted.")
    try:
        with transaction.atomic():
            return Report.objects.create(
                message=message, reporter=reporter, reason=reason, details=details, reported_body=message.body
            )
    except IntegrityError:
        raise ValidationError("You have already reported this message.") from None


REPORT_DETAILS_MAX_LENGTH = 1000


def resolve_reports(*, reports) -> int:
    """Mark reports handled (staff looked and kept the message, or deleted it)."""
    return Report.objects.filter(pk__in=[r.pk for r in reports], resolved_at__isnull=True).update(
        resolved_at=timezone.now()
    )


def lock_for_change(message: Message, *, member=None) -> tuple[Message, Chat]:
    """Lock the message's chat (the order of its changes) and read the message again under it;
    with `member`, only while they are still a member of the chat (in the same query: the
    lock is held by every other change and send of the chat meanwhile)."""
    chat = locked_chats().only("id", "kind", "last_message_id").filter(pk=message.chat_id).first()
    fresh = Message.objects.select_related("sender").filter(pk=message.pk, chat_id=message.chat_id)
    if member is not None:
        fresh = fresh.filter(chat__memberships__user=member)
    fresh = fresh.first()
    if chat is None or fresh is None:  # deleted, or left or removed, since the caller looked
        raise Membership.DoesNotExist("Not a member of this chat.")
    return fresh, chat


def require_member(*, chat_id: int, user) -> Membership:
    membership = Membership.objects.filter(chat_id=chat_id, user=user).first()
    if membership is None:  # left or removed since the caller looked
        raise Membership.DoesNotExist("Not a member of this chat.")
    return membership


def record_change(message: Message, chat: Chat, **fields) -> None:
    """Store `fields` on the message with the chat's next change cursor (the chat is locked).
    A message gone meanwhile (deleted outright, from the admin) raises, which rolls the cursor back."""
    chat.change_seq = take_change_cursor(chat.pk)
    if not stamp_message(message, chat.change_seq, **fields):
        raise ValidationError("This message was deleted.")


def returns_rows_from_writes() -> bool:
    """Whether the database returns rows from INSERT and UPDATE, and takes ON CONFLICT:
    PostgreSQL, and SQLite from 3.35 (Django's flag for returning rows from inserts)."""
    return connection.vendor in ("postgresql", "sqlite") and connection.features.can_return_rows_from_bulk_insert


def take_change_cursor(chat_id: int) -> int | None:
    """The chat's next change cursor, taken with the chat's row lock (or under it, if held):
    one statement where the database returns the updated value (PostgreSQL; SQLite 3.35 and
    later). None if the chat is gone."""
    chats = Chat.objects.filter(pk=chat_id)
    if not returns_rows_from_writes():
        chats.update(change_seq=F("change_seq") + 1)
        return chats.values_list("change_seq", flat=True).first()
    table, seq, pk = (connection.ops.quote_name(name) for name in (Chat._meta.db_table, "change_seq", "id"))
    with connection.cursor() as cursor:  # Django's update() returns a count, not the values
        sql = f"UPDATE {table} SET {seq} = {seq} + 1 WHERE {pk} = %s RETURNING {seq}"  # noqa: S608 - the model's names
        cursor.execute(sql, [chat_id])
        row = cursor.fetchone()
    return None if row is None else row[0]


def stamp_message(message: Message, change_seq: int, *, only_if: tuple = (), **fields) -> bool:
    """Store `fields` and the change cursor on the message; with `only_if` (conditions on the
    message, checked by the same statement), only if it still meets them, else False."""
    if not Message.objects.filter(*only_if, pk=message.pk).update(change_seq=change_seq, **fields):
        return False
    message.change_seq = change_seq
    for name, value in fields.items():
        setattr(message, name, value)
    return True
