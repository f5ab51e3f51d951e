"""Every read the chat app makes. Each runs a fixed number of queries, whatever the
number of chats, members or messages."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Sum, Window
from django.db.models.functions import RowNumber
from django.http import Http404

from chat.conf import chat_setting
from chat.models import MAX_ID, Block, Chat, FormerMembership, Membership, Message, Reaction
from chat.ratelimit import check_rate


@dataclass(frozen=True)
class InboxRow:
    membership: Membership
    chat: Chat
    title: str
    other_user: object | None
    last_message: Message | None

    @property
    def unread(self) -> int:
        return self.membership.unread_count

    @property
    def mentioned(self) -> bool:
        """Someone @mentioned them in a message they have not read yet."""
        return self.membership.last_mention_message_id > self.membership.last_read_message_id


@dataclass(frozen=True)
class MessagePage:
    messages: list[Message]
    has_older: bool
    has_newer: bool = False

    @property
    def oldest_id(self) -> int | None:
        return self.messages[0].pk if self.messages else None

    @property
    def newest_id(self) -> int | None:
        return self.messages[-1].pk if self.messages else None


def display_name(user) -> str:
    if user is None:
        return "Deleted user"
    full_name = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return full_name or user.get_username()


def visible_memberships(*, user) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user, is_hidden=False)


def inbox_rows(*, user, offset: int = 0, limit: int | None = None) -> tuple[list[InboxRow], bool]:
    """One page of the inbox, most recently active first, and whether more follow.

    Three queries: memberships with chat and last message, then the other person of
    each direct chat on the page.
    """
    limit = limit or chat_setting("CHAT_INBOX_PAGE_SIZE")
    memberships = list(
        visible_memberships(user=user)
        .select_related("chat", "chat__last_message", "chat__last_message__sender")
        .order_by("-chat__last_activity_at", "-chat_id")[offset : offset + limit + 1]
    )
    has_more = len(memberships) > limit
    memberships = memberships[:limit]
    direct_ids = [m.chat_id for m in memberships if not m.chat.is_group]
    others = {
        m.chat_id: m.user
        for m in Membership.objects.filter(chat_id__in=direct_ids).exclude(user=user).select_related("user")
    }
    rows = []
    for membership in memberships:
        chat = membership.chat
        other = others.get(chat.pk)
        title = chat.name if chat.is_group else display_name(other)
        visible_last = (chat.last_message_id or 0) > membership.cleared_message_id
        last = chat.last_message if visible_last else None
        rows.append(InboxRow(membership=membership, chat=chat, title=title, other_user=other, last_message=last))
    return rows, has_more


def total_unread(*, user) -> int:
    """Unread messages of the chats they see and have not muted (the badge)."""
    return total_unread_for_user_id(user_id=user.pk)


def total_unread_by_user(user_ids) -> dict[int, int]:
    """Total unread per user (users with none are absent). One query."""
    rows = (
        Membership.objects.filter(user_id__in=user_ids, unread_count__gt=0, is_hidden=False, is_muted=False)
        .values("user_id")
        .annotate(total=Sum("unread_count"))
        .values_list("user_id", "total")
    )
    return dict(rows)


def total_unread_for_user_id(*, user_id: int) -> int:
    return total_unread_by_user([user_id]).get(user_id, 0)


def room_cursors_by_chat(chat_ids) -> dict[int, dict]:
    """Each chat's newest message id and change cursor (chats gone are absent): what a
    room that reopens compares with what it shows, to fetch only when something is new."""
    rows = Chat.objects.filter(pk__in=chat_ids).values("pk", "last_message_id", "change_seq")
    return {row.pop("pk"): row for row in rows}


def memberships_by_pair(pairs) -> dict[tuple[int, int], Membership]:
    """The memberships of these (user id, chat id) pairs (pairs of no membership are
    absent), in one query: the rooms of many sockets opening together."""
    pairs = {(user_id, chat_id) for user_id, chat_id in pairs if 0 < chat_id <= MAX_ID}
    if not pairs:
        return {}
    memberships = Membership.objects.filter(
        user_id__in={user_id for user_id, _ in pairs}, chat_id__in={chat_id for _, chat_id in pairs}
    )
    return {key: m for m in memberships if (key := (m.user_id, m.chat_id)) in pairs}


def membership_for(*, user, chat_id) -> Membership | None:
    """The user's membership of a chat, with the chat; None for any chat they are not in,
    including ids no database could hold."""
    try:
        if int(chat_id) > MAX_ID:
            return None
        return Membership.objects.select_related("chat").get(user=user, chat_id=chat_id)
    except (Membership.DoesNotExist, ValueError, TypeError, OverflowError):
        return None


def membership_or_404(*, user, chat_id) -> Membership:
    """As `membership_for`, but a 404, so a chat's existence is never revealed."""
    membership = membership_for(user=user, chat_id=chat_id)
    if membership is None:
        raise Http404("No such chat.")
    return membership


def former_membership(*, user, chat_id) -> FormerMembership | None:
    """How they stopped being a member of a chat they are no longer in; None when they never
    were (or the chat is gone), so a stranger learns nothing about it."""
    try:
        if int(chat_id) > MAX_ID:
            return None
        return FormerMembership.objects.filter(user=user, chat_id=chat_id).first()
    except (ValueError, TypeError, OverflowError):
        return None


def chat_title(*, chat: Chat, user) -> str:
    if chat.is_group:
        return chat.name
    other = Membership.objects.filter(chat=chat).exclude(user=user).select_related("user").first()
    return display_name(other.user if other else None)


def messages_page(
    *, membership: Membership, before: int | None = None, after: int | None = None, limit: int | None = None
) -> MessagePage:
    """A page of a chat's history as this member may see it, oldest first.

    With `before`: the page just before that id (or the newest page). With `after`: the
    messages just after that id (and before `before`, if given), for catching up.
    """
    limit = limit or chat_setting("CHAT_PAGE_SIZE")
    # The quoted original of a reply comes in the same query (a join), as it is now.
    history = Message.objects.filter(chat_id=membership.chat_id, pk__gt=membership.cleared_message_id).select_related(
        "sender", "reply_to", "reply_to__sender"
    )
    if after is not None:
        if before is not None:
            history = history.filter(pk__lt=before)
        messages = list(history.filter(pk__gt=after).order_by("pk")[: limit + 1])
        return MessagePage(messages=with_reactions(messages[:limit]), has_older=False, has_newer=len(messages) > limit)
    if before is not None:
        history = history.filter(pk__lt=before)
    messages = list(history.order_by("-pk")[: limit + 1])
    has_older = len(messages) > limit
    return MessagePage(messages=with_reactions(messages[:limit][::-1]), has_older=has_older)


def newest_messages_after(after_by_chat: dict[int, int], *, limit: int) -> dict[int, list[Message]]:
    """Each chat's newest `limit` messages after the id given for it, oldest first, with
    their reactions: what rooms reopening together missed."""
    missed = Q()
    for chat_id, after in after_by_chat.items():
        missed |= Q(chat_id=chat_id, pk__gt=after)
    return first_messages_by_chat(missed, order_by=F("pk").desc(), limit=limit) if after_by_chat else {}


def messages_between(ranges: list[tuple[int, int, int, tuple[int, ...]]], *, limit: int) -> dict[int, list[Message]]:
    """By chat, the oldest `limit` of its messages in these (chat id, after id, up to id,
    ids left out) ranges, oldest first, with their reactions."""
    wanted = Q()
    for chat_id, after, up_to, left_out in ranges:
        wanted |= Q(chat_id=chat_id, pk__gt=after, pk__lte=up_to) & ~Q(pk__in=left_out)
    return first_messages_by_chat(wanted, order_by=F("pk").asc(), limit=limit) if ranges else {}


def first_messages_by_chat(wanted: Q, *, order_by, limit: int) -> dict[int, list[Message]]:
    """By chat, the first `limit` of the messages `wanted` in `order_by` order, oldest first,
    with what their bubbles show: one query for every chat (a window over the chats) and one
    for the reactions."""
    rank = Window(RowNumber(), partition_by=F("chat_id"), order_by=order_by)
    rows = (
        Message.objects.filter(wanted)
        .select_related("sender", "reply_to", "reply_to__sender")
        .annotate(rank_in_chat=rank)
        .filter(rank_in_chat__lte=limit)
        .order_by("pk")
    )
    by_chat: dict[int, list[Message]] = {}
    for message in with_reactions(list(rows)):
        by_chat.setdefault(message.chat_id, []).append(message)
    return by_chat


def chat_members(*, chat: Chat) -> list[Membership]:
    # "admin" sorts before "member", so admins come first.
    return list(Membership.objects.filter(chat=chat).select_related("user").order_by("role", "joined_at", "pk"))


def find_user_by_email(*, email: str, looked_up_by):
    """The active user with this e-mail (case-insensitive), or None.

    Charged to `looked_up_by` first (see charge_email_lookups).
    """
    email = (email or "").strip()
    if not email:
        return None
    charge_email_lookups(looked_up_by=looked_up_by, count=1)
    return get_user_model()._default_manager.filter(email__iexact=email, is_active=True).order_by("pk").first()


def charge_email_lookups(*, looked_up_by, count: int) -> None:
    """Count `count` addresses against the person's one e-mail lookup limit, before the query.

    Whether an address has an account is what an enumeration wants to learn, so every
    path that answers it shares the limit, and a cache outage shuts lookups (503) rather
    than leaving them unlimited.
    """
    check_rate(action="email_lookup", key=looked_up_by.pk, cost=count, fail_open=False)


def unread_by_member(*, chat_id: int, excluding=()) -> dict[int, tuple[int, int]]:
    """For each member of a chat but `excluding`: (unread in this chat, total unread). Two queries."""
    members = Membership.objects.filter(chat_id=chat_id).exclude(user_id__in=excluding)
    per_chat = dict(members.values_list("user_id", "unread_count"))
    totals = total_unread_by_user(user_ids=per_chat)
    return {user_id: (unread, totals.get(user_id, 0)) for user_id, unread in per_chat.items()}


def find_users_by_emails(*, emails, looked_up_by) -> dict[str, object]:
    """Active users by lower-cased e-mail, for the given addresses. One query, each
    address charged to `looked_up_by` first (see charge_email_lookups)."""
    wanted = {email.strip().lower() for email in emails if email and email.strip()}
    if not wanted:
        return {}
    charge_email_lookups(looked_up_by=looked_up_by, count=len(wanted))
    query = Q()
    for email in wanted:
        query |= Q(email__iexact=email)
    users = get_user_model()._default_manager.filter(query, is_active=True).order_by("pk")
    found: dict[str, object] = {}
    for user in users:
        found.setdefault(user.email.lower(), user)
    return found


# --- @mentions ------------------------------------------------------------------------


def mention_candidates(*, chat: Chat, user) -> list[dict]:
    """The people `user` can @mention in a group (its other members), by name; none in a
    direct chat. One query."""
    if not chat.is_group:
        return []
    members = Membership.objects.filter(chat=chat).exclude(user=user).select_related("user")
    people = [{"id": m.user_id, "name": display_name(m.user), "username": m.user.get_username()} for m in members]
    return sorted(people, key=lambda person: person["name"].casefold())


def mention_names(*, chat_id: int, excluding: int) -> list[tuple[str, int]]:
    """(name, user id) for every way to @mention the other members of a group (display
    name and username), longest first so "@Ann Lee" wins over "@Ann". One query."""
    members = (
        Membership.objects.filter(chat_id=chat_id, chat__kind=Chat.Kind.GROUP)
        .exclude(user_id=excluding)
        .select_related("user")
        .order_by("user_id")
    )
    names = {}
    for membership in members:
        for name in (display_name(membership.user), membership.user.get_username()):
            names.setdefault(name.casefold(), (name, membership.user_id))
    return sorted(names.values(), key=lambda entry: -len(entry[0]))


def unread_mention_ids(*, chat_id: int) -> set[int]:
    """The members of a chat with an @mention in it they have not read. One query."""
    members = Membership.objects.filter(chat_id=chat_id, last_mention_message_id__gt=F("last_read_message_id"))
    return set(members.values_list("user_id", flat=True))


# --- people: unread divider, blocked people -------------------------------------------

# A room opened with more unread messages than a page holds shows up to this many, so the
# "New messages" divider is on the page; past that it sits at the top of what is shown.
UNREAD_PAGE_MAX = 200
# Messages shown above the first unread one, for context.
UNREAD_CONTEXT = 5


def room_page(*, membership: Membership) -> MessagePage:
    """The newest page of a room, long enough to reach its first unread message."""
    page_size = chat_setting("CHAT_PAGE_SIZE")
    limit = min(max(page_size, membership.unread_count + UNREAD_CONTEXT), max(page_size, UNREAD_PAGE_MAX))
    return messages_page(membership=membership, limit=limit)


def first_unread_id(*, membership: Membership, page: MessagePage) -> int | None:
    """The message the "New messages" divider goes above: the first on the page after the
    member's read mark, from someone else. `membership` is as it was when the room was
    opened (before opening it marked everything read), so the divider stays where it was
    while they read. No query: the read mark and the page are already loaded."""
    if membership.unread_count <= 0:
        return None
    read_up_to = membership.last_read_message_id
    return next(
        (m.pk for m in page.messages if m.pk > read_up_to and m.sender_id != membership.user_id),
        None,
    )


def blocked_people(*, user) -> list:
    """The people this user blocked, earliest first. One query."""
    blocks = Block.objects.filter(blocker=user).select_related("blocked").order_by("created_at", "pk")
    return [block.blocked for block in blocks]


def blocked_user_ids(*, user) -> set[int]:
    """The people this user blocked. One query."""
    return set(Block.objects.filter(blocker=user).values_list("blocked_id", flat=True))


def user_by_id(*, user_id: int):
    """A user by id, None when there is none."""
    return get_user_model()._default_manager.filter(pk=user_id).first()


# --- message changes: reactions, one message, changes since a cursor, report context ----


@dataclass(frozen=True)
class ReactionCount:
    """One emoji on one message: how many, and who (for the hover/focus list)."""

    emoji: str
    user_ids: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.user_ids)

    @property
    def who(self) -> str:
        shown = ", ".join(self.names[:REACTION_NAMES_SHOWN])
        more = self.count - REACTION_NAMES_SHOWN
        return f"{shown} and {more} more" if more > 0 else shown

    @property
    def reactor_ids(self) -> str:
        return " ".join(str(user_id) for user_id in self.user_ids)


REACTION_NAMES_SHOWN = 10


def with_reactions(messages: list[Message]) -> list[Message]:
    """Give each message its `reaction_counts`, emoji in CHAT_REACTIONS order, people in
    the order they reacted. One query for the whole page, however many reactions it has."""
    by_message: dict[int, dict[str, list]] = {}
    if messages:
        reactions = (
            Reaction.objects.filter(message_id__in=[message.pk for message in messages])
            .select_related("user")
            .order_by("created_at", "pk")
        )
        for reaction in reactions:
            people = by_message.setdefault(reaction.message_id, {}).setdefault(reaction.emoji, [])
            people.append(reaction.user)
    order = {emoji: index for index, emoji in enumerate(chat_setting("CHAT_REACTIONS"))}
    for message in messages:
        by_emoji = by_message.get(message.pk, {})
        message.reaction_counts = [
            ReactionCount(
                emoji=emoji,
                user_ids=tuple(user.pk for user in people),
                names=tuple(display_name(user) for user in people),
            )
            for emoji, people in sorted(by_emoji.items(), key=lambda item: order.get(item[0], len(order)))
        ]
    return messages


def message_or_404(*, membership: Membership, message_id) -> Message:
    """A message of the member's chat that they can see, with its reactions; a 404 for any
    other id (another chat's message, one before their "delete for me", one that does not exist)."""
    try:
        if int(message_id) > MAX_ID:
            raise Http404("No such message.")
    except (ValueError, TypeError):
        raise Http404("No such message.") from None
    message = (
        Message.objects.select_related("sender")
        .filter(pk=message_id, chat_id=membership.chat_id, pk__gt=membership.cleared_message_id)
        .first()
    )
    if message is None:
        raise Http404("No such message.")
    return with_reactions([message])[0]


def message_of_member_or_404(*, user, chat_id: int, message_id: int) -> Message:
    """`message_or_404` for someone whose membership is not at hand (a room socket's change),
    read with it in one query; Membership.DoesNotExist if they are no longer a member."""
    visible = Membership.objects.filter(chat_id=chat_id, user=user, cleared_message_id__lt=OuterRef("pk"))
    messages = Message.objects.select_related("sender").filter(Exists(visible), pk=message_id, chat_id=chat_id)
    message = messages.first() if message_id <= MAX_ID else None
    if message is not None:
        return message
    if membership_for(user=user, chat_id=chat_id) is None:
        raise Membership.DoesNotExist("Not a member of this chat.")
    raise Http404("No such message.")


@dataclass(frozen=True)
class ChangesPage:
    messages: list[Message]
    has_more: bool

    @property
    def cursor(self) -> int | None:
        return self.messages[-1].change_seq if self.messages else None


def messages_changed_since(*, membership: Membership, since: int, limit: int | None = None) -> ChangesPage:
    """The member's messages edited, deleted or reacted to after change cursor `since`, in
    the order of their changes: what a room that missed change frames fetches to be current."""
    limit = limit or chat_setting("CHAT_PAGE_SIZE")
    changed = Message.objects.filter(
        chat_id=membership.chat_id, change_seq__gt=since, pk__gt=membership.cleared_message_id
    ).select_related("sender")
    messages = list(changed.order_by("change_seq")[: limit + 1])
    return ChangesPage(messages=with_reactions(messages[:limit]), has_more=len(messages) > limit)


def report_context(*, message: Message, around: int = 3) -> list[Message]:
    """The reported message with up to `around` messages of its chat on each side, oldest first."""
    chat_messages = Message.objects.filter(chat_id=message.chat_id).select_related("sender")
    before = list(chat_messages.filter(pk__lt=message.pk).order_by("-pk")[:around])
    after = list(chat_messages.filter(pk__gte=message.pk).order_by("pk")[: around + 1])
    return before[::-1] + after


def members_among(*, chat_id: int, user_ids, here: frozenset[int] | None) -> tuple[set[int], frozenset[int] | None]:
    """Which of `user_ids` are members of the chat, read in one query with the people with a
    socket of it in this server process (`here`); and the outsiders, those of `here` who
    are not (None when `here` is None: nobody looked). One query."""
    members = members_of_chats({chat_id: set(user_ids) | (here or frozenset())}).get(chat_id, set())
    return members, (None if here is None else frozenset(here - members))


def members_of_chats(asked: dict[int, set[int]]) -> dict[int, set[int]]:
    """Which of the people asked about in each chat are its members, by chat. One query."""
    if not asked:
        return {}
    everyone = set().union(*asked.values())
    rows = Membership.objects.filter(chat_id__in=asked, user_id__in=everyone).values_list("chat_id", "user_id")
    members: dict[int, set[int]] = defaultdict(set)
    for chat_id, user_id in rows:
        if user_id in asked[chat_id]:
            members[chat_id].add(user_id)
    return members


def member_ids(*, chat_id: int) -> list[int]:
    return list(Membership.objects.filter(chat_id=chat_id).values_list("user_id", flat=True))
