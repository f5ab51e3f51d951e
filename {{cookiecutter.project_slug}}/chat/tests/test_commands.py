"""The management commands: seed_chat_data and purge_deleted_chats."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db.models import Count, Max
from django.utils import timezone

from chat import selectors, services
from chat.conf import chat_setting
from chat.management.commands.seed_chat_data import DEMO_PASSWORD
from chat.models import Chat, Membership, Message


def run(command, *args, **options) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, **options)
    return out.getvalue()


def seed(*args) -> str:
    return run("seed_chat_data", "--force", *args)


def table_sizes() -> dict[str, int]:
    return {
        "users": get_user_model().objects.count(),
        "chats": Chat.objects.count(),
        "memberships": Membership.objects.count(),
        "messages": Message.objects.count(),
    }


def assert_denormalised_fields_match_a_recount():
    """What services.send_message and mark_read would have left, recounted from the messages."""
    latest = dict(Message.objects.values("chat_id").annotate(latest=Max("pk")).values_list("chat_id", "latest"))
    for chat in Chat.objects.select_related("last_message"):
        assert chat.last_message_id == latest.get(chat.pk), chat
        expected_activity = chat.last_message.created_at if chat.last_message else chat.created_at
        assert chat.last_activity_at == expected_activity, chat
    for membership in Membership.objects.all():
        in_chat = Message.objects.filter(chat_id=membership.chat_id)
        own_latest = in_chat.filter(sender_id=membership.user_id).aggregate(latest=Max("pk"))["latest"] or 0
        assert own_latest <= membership.last_read_message_id <= (latest.get(membership.chat_id) or 0), membership
        unread = in_chat.filter(pk__gt=membership.last_read_message_id).exclude(sender_id=membership.user_id).count()
        assert membership.unread_count == unread, membership
        assert (membership.is_hidden, membership.cleared_message_id) == (False, 0)


def assert_ids_follow_time_in_every_chat():
    for chat_id in Chat.objects.values_list("pk", flat=True):
        times = list(Message.objects.filter(chat_id=chat_id).order_by("pk").values_list("created_at", flat=True))
        assert times == sorted(times)


# seed_chat_data


def test_seed_refuses_to_run_without_debug(db):
    with pytest.raises(CommandError, match="DEBUG.*--force"):
        call_command("seed_chat_data", stdout=StringIO())

    assert table_sizes() == {"users": 0, "chats": 0, "memberships": 0, "messages": 0}


def test_seed_runs_with_debug_on(db, settings):
    settings.DEBUG = True

    run("seed_chat_data")

    assert Chat.objects.exists()


def test_seed_prints_the_demo_logins_that_work(db):
    output = seed()

    assert "Demo logins" in output
    assert DEMO_PASSWORD in output
    for username in ["alice", "bob", "carol", "dave", "erin"]:
        assert f"{username}@example.com" in output
        user = get_user_model().objects.get(username=username)
        assert user.email == f"{username}@example.com"
        assert user.check_password(DEMO_PASSWORD)


def test_seed_creates_direct_and_group_chats_with_a_long_history_and_unread_messages(db):
    seed()

    assert set(Chat.objects.values_list("kind", flat=True)) == {Chat.Kind.DIRECT, Chat.Kind.GROUP}
    longest = Chat.objects.annotate(size=Count("messages")).order_by("-size").first()
    assert longest.size > chat_setting("CHAT_PAGE_SIZE")
    assert Membership.objects.filter(unread_count__gt=0).exists()
    assert all(
        group.memberships.filter(role=Membership.Role.ADMIN).count() == 1 for group in Chat.objects.filter(kind="group")
    )


def test_seeding_twice_adds_nothing(db):
    seed()
    before = table_sizes()

    output = seed()

    assert table_sizes() == before
    assert "Chats: 0 created" in output
    assert "Demo logins" in output


@pytest.mark.parametrize(("users", "chats", "messages"), [(2, 1, 0), (3, 4, 10), (12, 30, 700)])
def test_seed_size_flags_give_exactly_that_many_rows(db, users, chats, messages):
    seed("--users", str(users), "--chats", str(chats), "--messages", str(messages))

    sizes = table_sizes()
    assert (sizes["users"], sizes["chats"], sizes["messages"]) == (users, chats, messages)


def test_seeded_denormalised_fields_equal_a_recount(db):
    seed("--users", "8", "--chats", "25", "--messages", "1500", "--seed", "3")

    assert_denormalised_fields_match_a_recount()
    assert_ids_follow_time_in_every_chat()


def test_seeded_data_stays_consistent_when_people_keep_chatting(db):
    seed("--users", "4", "--chats", "5", "--messages", "200")
    chat = Chat.objects.order_by("pk").first()
    alice, other = (m.user for m in chat.memberships.select_related("user").order_by("user__username")[:2])

    services.send_message(chat=chat, sender=other, body="after the seed")
    services.mark_read(chat=chat, user=alice, up_to_id=chat.last_message_id)

    assert_denormalised_fields_match_a_recount()


def test_the_benchmark_user_is_in_every_chat(db):
    seed("--users", "6", "--chats", "40", "--messages", "2000", "--benchmark-user", "carol", "--quiet")

    carol = get_user_model().objects.get(username="carol")
    assert Membership.objects.filter(user=carol).count() == 40
    rows, has_more = selectors.inbox_rows(user=carol, limit=50)
    assert (len(rows), has_more) == (40, False)
    assert_denormalised_fields_match_a_recount()


def test_the_same_seed_gives_the_same_data(db):
    def fingerprint():
        return [
            (chat.kind, chat.name, sorted(m.user.username for m in chat.memberships.all()), chat.message_count)
            for chat in Chat.objects.prefetch_related("memberships__user")
            .annotate(message_count=Count("messages"))
            .order_by("pk")
        ]

    seed("--users", "7", "--chats", "12", "--messages", "300", "--seed", "42")
    first = fingerprint()
    Chat.objects.all().delete()
    seed("--users", "7", "--chats", "12", "--messages", "300", "--seed", "42")

    assert fingerprint() == first


def test_quiet_prints_only_the_logins(db):
    output = seed("--quiet")

    assert output.startswith("Demo logins")


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--users", "1"], "--users 2"), (["--benchmark-user", "mallory"], "--benchmark-user")],
)
def test_seed_rejects_bad_flags(db, args, message):
    with pytest.raises(CommandError, match=message):
        seed(*args)


def test_seed_lists_many_users_in_short(db):
    output = seed("--users", "25", "--chats", "3", "--messages", "10")

    assert "and 15 more" in output
    assert get_user_model().objects.filter(username="demo0025", email="demo0025@example.com").exists()


# purge_deleted_chats


@pytest.fixture
def deleted_by_everyone(direct_chat, alice, bob):
    services.send_message(chat=direct_chat, sender=alice, body="soon gone")
    for user in (alice, bob):
        services.soft_delete_chat(chat=direct_chat, user=user)
    return direct_chat


def test_purge_says_when_there_is_nothing_to_purge(group_chat):
    assert run("purge_deleted_chats").strip() == "Nothing to purge."
    assert Chat.objects.count() == 1


def test_purge_prints_the_count_and_ids_it_deleted(deleted_by_everyone):
    output = run("purge_deleted_chats")

    assert output.strip() == f"Deleted 1 chat: {deleted_by_everyone.pk}"
    assert not Chat.objects.exists()


def test_purge_dry_run_prints_what_it_would_delete_and_deletes_nothing(deleted_by_everyone):
    output = run("purge_deleted_chats", "--dry-run")

    assert output.strip() == f"Would delete 1 chat: {deleted_by_everyone.pk}"
    assert Chat.objects.filter(pk=deleted_by_everyone.pk).exists()


@pytest.mark.parametrize(("older_than", "purged"), [("7", False), ("2", True)])
def test_purge_older_than_keeps_recently_active_chats(deleted_by_everyone, older_than, purged):
    Chat.objects.update(last_activity_at=timezone.now() - timedelta(days=3))

    output = run("purge_deleted_chats", "--older-than", older_than)

    assert output.startswith("Deleted") is purged
    assert Chat.objects.exists() is not purged


def test_purge_rejects_a_negative_age(db):
    with pytest.raises(CommandError, match="--older-than"):
        run("purge_deleted_chats", "--older-than", "-1")
