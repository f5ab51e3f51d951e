"""Demo users and chats for development, and large data sets for benchmarks.

Idempotent: demo users are looked up by username and demo chats by their identity (the
pair of a direct chat, the name and creator of a group), so a second run with the same
flags adds nothing. Rows are bulk-inserted and the denormalised fields (the chat's last
message and activity time, each member's last read message and unread count) are then
set with a few set-based queries to what `services.send_message` / `mark_read` would
have left.

    python manage.py seed_chat_data                         # 5 people, a few chats
    python manage.py seed_chat_data --users 50 --chats 1000 --messages 100000 \\
        --benchmark-user alice                              # alice is in all 1,000 chats
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Count, F, OuterRef, Subquery
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from chat.models import Chat, Membership, Message
from chat.services import direct_key_for

# Shared by every demo account and printed at the end; the command refuses to run
# without DEBUG so these accounts never reach a production database by accident.
DEMO_PASSWORD = "chat-demo-password"  # noqa: S105
DEMO_EMAIL_DOMAIN = "example.com"
NAMED_USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
GROUP_NAMES = ["Weekend hike", "Book club", "Project Phoenix", "Family", "Five-a-side", "Lunch crew"]
PHRASES = [
    "Hi!",
    "How are you?",
    "Did you see the latest update?",
    "Sounds good to me.",
    "Let's meet at 7.",
    "I'll be a few minutes late, sorry.",
    "Can you send me the document?",
    "Thanks, that helps a lot.",
    "Haha, exactly 😄",
    "On my way.",
    "What do you think about the new plan? I'm not sure it covers the edge cases we talked about.",
    "Lunch tomorrow?",
    "I pushed a fix, can you take a look when you have a minute?",
    "<b>Not bold</b>: markup in messages is shown as text.",
    "Good night!",
]
BATCH_SIZE = 2000
HISTORY_SPAN = timedelta(days=30)


@dataclass
class PlannedChat:
    kind: str
    name: str
    members: list  # users; the first is the creator (and a group's admin)
    message_count: int
    direct_key: str | None = None
    unread_lag: dict = field(default_factory=dict)  # user pk -> messages left unread at the end


class Command(BaseCommand):
    help = "Create demo users and chats (idempotent). Prints the demo logins. Refuses to run without DEBUG."

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=5, help="Number of demo users (default 5).")
        parser.add_argument("--chats", type=int, default=8, help="Number of demo chats (default 8).")
        parser.add_argument(
            "--messages", type=int, default=400, help="Messages in all demo chats together (default 400)."
        )
        parser.add_argument("--seed", type=int, default=1, help="Random seed; the same flags give the same data.")
        parser.add_argument(
            "--benchmark-user",
            metavar="USERNAME",
            help="Put this demo user in every chat (e.g. alice), to benchmark a full inbox.",
        )
        parser.add_argument("--quiet", action="store_true", help="Print only the demo logins.")
        parser.add_argument("--force", action="store_true", help="Run even though DEBUG is off. Never in production.")

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "seed_chat_data creates accounts with a shared, printed demo password, so it only runs with "
                "DEBUG=true. Pass --force to run it anyway (never on a production database)."
            )
        users_wanted, chats_wanted, messages_wanted = options["users"], options["chats"], options["messages"]
        if users_wanted < 2 or chats_wanted < 0 or messages_wanted < 0:
            raise CommandError("Use --users 2 or more, and --chats / --messages of 0 or more.")
        started = time.perf_counter()
        rng = random.Random(options["seed"])  # noqa: S311 - demo data, not secrets
        usernames = demo_usernames(users_wanted)
        focus = options["benchmark_user"]
        if focus is not None and focus not in usernames:
            raise CommandError(f"--benchmark-user must be one of the demo users ({usernames[0]}, …).")

        with transaction.atomic():
            users, created_users = ensure_users(usernames)
            focus_user = users[usernames.index(focus)] if focus else None
            plan = plan_chats(rng, users, chats_wanted, messages_wanted, focus=focus_user)
            new_chats = without_existing(plan)
            message_count = create_chats(rng, new_chats)

        elapsed = time.perf_counter() - started
        if not options["quiet"]:
            self.stdout.write(
                f"Users: {created_users} created, {len(users) - created_users} already there. "
                f"Chats: {len(new_chats)} created, {len(plan) - len(new_chats)} already there. "
                f"Messages: {message_count} created. ({elapsed:.1f} s)"
            )
        self.print_logins(users)

    def print_logins(self, users) -> None:
        self.stdout.write(self.style.SUCCESS(f"Demo logins (password for all: {DEMO_PASSWORD}):"))
        shown = users[: len(NAMED_USERS)]
        for user in shown:
            self.stdout.write(f"  {user.get_username():<10} {user.email}")
        if len(users) > len(shown):
            self.stdout.write(f"  … and {len(users) - len(shown)} more ({users[-1].get_username()}, {users[-1].email})")


def demo_usernames(count: int) -> list[str]:
    named = NAMED_USERS[:count]
    return named + [f"demo{number:04d}" for number in range(len(named) + 1, count + 1)]


def ensure_users(usernames: list[str]) -> tuple[list, int]:
    """The demo users in `usernames` order, creating the missing ones (one password hash for all)."""
    User = get_user_model()
    existing = {user.get_username(): user for user in User._default_manager.filter(username__in=usernames)}
    missing = [name for name in usernames if name not in existing]
    if missing:
        password = make_password(DEMO_PASSWORD)
        User._default_manager.bulk_create(
            [
                User(
                    username=name, email=f"{name}@{DEMO_EMAIL_DOMAIN}", first_name=name.capitalize(), password=password
                )
                for name in missing
            ],
            batch_size=BATCH_SIZE,
        )
        existing = {user.get_username(): user for user in User._default_manager.filter(username__in=usernames)}
    return [existing[name] for name in usernames], len(missing)


def plan_chats(
    rng: random.Random, users: list, chat_count: int, message_count: int, *, focus=None
) -> list[PlannedChat]:
    """The demo chats for these flags: about a third groups, the rest direct chats.

    With `focus`, every chat includes that user (their direct chats are with each of the
    others, the rest are groups). Messages follow a long tail: the first chat gets the most,
    well over a page, so "Load older" has something to load.
    """
    if chat_count == 0:
        return []
    if focus is not None:
        pairs = [(focus, other) for other in users if other.pk != focus.pk]
    else:
        pairs = list(itertools.combinations(users, 2))
        rng.shuffle(pairs)
        pairs.sort(key=lambda pair: pair[0].pk != users[0].pk)  # the first user's chats first
    group_count = max(chat_count // 3, chat_count - len(pairs)) if chat_count > 1 else 0
    direct_count = chat_count - group_count
    plan = [
        PlannedChat(
            kind=Chat.Kind.DIRECT, name="", members=list(pair), message_count=0, direct_key=direct_key_for(*pair)
        )
        for pair in pairs[:direct_count]
    ]
    for number in range(group_count):
        name = GROUP_NAMES[number % len(GROUP_NAMES)]
        if number >= len(GROUP_NAMES):
            name = f"{name} {number // len(GROUP_NAMES) + 1}"
        size = min(len(users), rng.randint(3, 8))
        members = rng.sample(users, size)
        if focus is not None and focus not in members:
            members[rng.randrange(size)] = focus
        plan.append(PlannedChat(kind=Chat.Kind.GROUP, name=name, members=members, message_count=0))
    # The longest history goes to the first chat (a direct chat of the first user); the
    # other counts are shuffled so groups and direct chats both get long and short ones.
    counts = long_tail(message_count, len(plan))
    rest = counts[1:]
    rng.shuffle(rest)
    for planned, count in zip(plan, counts[:1] + rest, strict=True):
        planned.message_count = count
    for planned in plan:
        for member in planned.members:
            # Most chats are read; some leave a few messages unread so the badges show.
            planned.unread_lag[member.pk] = rng.choice([0, 0, 0, 0, 0, 1, 2, 5])
    return plan


def long_tail(total: int, buckets: int) -> list[int]:
    """Split `total` over `buckets`: one each if there are enough, the rest by 1/rank."""
    base = 1 if total >= buckets else 0
    remaining = total - base * buckets
    weights = [1 / (rank + 1) for rank in range(buckets)]
    scale = remaining / sum(weights)
    counts = [base + int(weight * scale) for weight in weights]
    for index in range(total - sum(counts)):
        counts[index % buckets] += 1
    return counts


def without_existing(plan: list[PlannedChat]) -> list[PlannedChat]:
    """The planned chats not in the database yet: a direct chat by its pair, a group by
    its name and creator (the demo chats' marker)."""
    direct_keys = [planned.direct_key for planned in plan if planned.direct_key]
    existing_keys = set()
    for batch in batched(direct_keys):
        existing_keys.update(Chat.objects.filter(direct_key__in=batch).values_list("direct_key", flat=True))
    groups = [planned for planned in plan if planned.kind == Chat.Kind.GROUP]
    existing_groups = set(
        Chat.objects.filter(
            kind=Chat.Kind.GROUP,
            name__in={planned.name for planned in groups},
            created_by__in={planned.members[0].pk for planned in groups},
        ).values_list("name", "created_by_id")
    )
    return [
        planned
        for planned in plan
        if planned.direct_key not in existing_keys and (planned.name, planned.members[0].pk) not in existing_groups
    ]


def create_chats(rng: random.Random, plan: list[PlannedChat]) -> int:
    """Bulk-insert the chats, memberships and messages, then set the denormalised fields."""
    if not plan:
        return 0
    now = timezone.now()
    span = HISTORY_SPAN.total_seconds()
    # Timestamps first: messages are inserted in time order, so ids grow with time in every
    # chat and across chats, as they do when people send them one by one.
    timeline = sorted(
        (now - timedelta(seconds=rng.random() * span), index)
        for index, planned in enumerate(plan)
        for _ in range(planned.message_count)
    )
    first_message_at = {}
    for sent_at, index in timeline:
        first_message_at.setdefault(index, sent_at)
    chats = []
    for index, planned in enumerate(plan):
        created_at = first_message_at.get(index, now - timedelta(seconds=rng.random() * span)) - timedelta(minutes=5)
        chats.append(
            Chat(
                kind=planned.kind,
                name=planned.name,
                direct_key=planned.direct_key,
                created_by=planned.members[0],
                created_at=created_at,
                last_activity_at=created_at,
            )
        )
    Chat.objects.bulk_create(chats, batch_size=BATCH_SIZE)

    memberships = []
    for planned, chat in zip(plan, chats, strict=True):
        for position, member in enumerate(planned.members):
            role = (
                Membership.Role.ADMIN if planned.kind == Chat.Kind.GROUP and position == 0 else Membership.Role.MEMBER
            )
            joined_at = chat.created_at + timedelta(seconds=position)
            memberships.append(Membership(chat=chat, user=member, role=role, joined_at=joined_at))
    Membership.objects.bulk_create(memberships, batch_size=BATCH_SIZE)

    messages = []
    for sent_at, index in timeline:
        planned = plan[index]
        messages.append(
            Message(
                chat_id=chats[index].pk,
                sender_id=rng.choice(planned.members).pk,
                body=rng.choice(PHRASES),
                created_at=sent_at,
            )
        )
    Message.objects.bulk_create(messages, batch_size=BATCH_SIZE)

    chat_ids = [chat.pk for chat in chats]
    set_last_messages(chat_ids)
    lags = {}
    for planned, chat in zip(plan, chats, strict=True):
        for user_pk, lag in planned.unread_lag.items():
            lags.setdefault(lag, []).append((chat.pk, user_pk))
    by_chat_and_user = {(membership.chat_id, membership.user_id): membership.pk for membership in memberships}
    set_read_positions({lag: [by_chat_and_user[key] for key in keys] for lag, keys in lags.items()})
    return len(messages)


def set_last_messages(chat_ids: list[int]) -> None:
    """Chat.last_message and last_activity_at, as send_message leaves them."""
    latest = Message.objects.filter(chat_id=OuterRef("pk")).order_by("-pk")
    for batch in batched(chat_ids):
        Chat.objects.filter(pk__in=batch).update(
            last_message_id=Subquery(latest.values("pk")[:1]),
            last_activity_at=Coalesce(Subquery(latest.values("created_at")[:1]), F("created_at")),
        )


def set_read_positions(membership_ids_by_lag: dict[int, list[int]]) -> None:
    """Each member has read all but the last `lag` messages of the chat, and everything up
    to their own latest message (sending marks read); unread counts the others' messages
    after that, exactly as send_message and mark_read keep them."""
    in_chat = Message.objects.filter(chat_id=OuterRef("chat_id")).order_by("-pk").values("pk")
    own_latest = in_chat.filter(sender_id=OuterRef("user_id"))[:1]
    for lag, membership_ids in membership_ids_by_lag.items():
        for batch in batched(membership_ids):
            Membership.objects.filter(pk__in=batch).update(
                last_read_message_id=Greatest(
                    Coalesce(Subquery(in_chat[lag : lag + 1]), 0), Coalesce(Subquery(own_latest), 0)
                )
            )
    unread = (
        Message.objects.filter(chat_id=OuterRef("chat_id"), pk__gt=OuterRef("last_read_message_id"))
        .exclude(sender_id=OuterRef("user_id"))
        .order_by()
        .values("chat_id")
        .annotate(count=Count("pk"))
        .values("count")
    )
    for batch in batched([pk for ids in membership_ids_by_lag.values() for pk in ids]):
        Membership.objects.filter(pk__in=batch).update(unread_count=Coalesce(Subquery(unread), 0))


def batched(items: list, size: int = 500):
    for start in range(0, len(items), size):
        yield items[start : start + size]
