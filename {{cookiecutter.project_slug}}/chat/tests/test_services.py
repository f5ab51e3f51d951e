"""Every write of the chat app, through chat.services."""

import sqlite3
import threading
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import selectors, services
from chat.models import Chat, Membership, Message
from chat.tests.test_admin import chat_lock_before_any_delete


def membership(chat, user) -> Membership:
    return Membership.objects.get(chat=chat, user=user)


def send_many(chat, sender, count, prefix="message"):
    return [services.send_message(chat=chat, sender=sender, body=f"{prefix} {number}") for number in range(count)]


# Direct chats


def test_direct_chat_is_created_once_with_both_people_as_members(alice, bob):
    chat, created = services.get_or_create_direct_chat(user=alice, other=bob)

    assert created
    assert chat.kind == Chat.Kind.DIRECT
    assert set(chat.memberships.values_list("user__username", flat=True)) == {"alice", "bob"}


@pytest.mark.parametrize("second_caller", ["same", "other"])
def test_starting_an_existing_direct_chat_reuses_it(alice, bob, direct_chat, second_caller):
    user, other = (alice, bob) if second_caller == "same" else (bob, alice)

    chat, created = services.get_or_create_direct_chat(user=user, other=other)

    assert (chat, created) == (direct_chat, False)
    assert Chat.objects.count() == 1


def test_a_direct_chat_with_yourself_is_a_validation_error(alice):
    with pytest.raises(ValidationError):
        services.get_or_create_direct_chat(user=alice, other=alice)

    assert not Chat.objects.exists()


def test_reopening_a_deleted_direct_chat_shows_it_again_without_the_old_history(alice, bob, direct_chat):
    services.send_message(chat=direct_chat, sender=bob, body="old")
    services.soft_delete_chat(chat=direct_chat, user=alice)

    chat, created = services.get_or_create_direct_chat(user=alice, other=bob)

    assert not created
    assert not membership(chat, alice).is_hidden
    assert selectors.messages_page(membership=membership(chat, alice)).messages == []


@pytest.fixture
def database_for_threads(transactional_db, tmp_path):
    """Call it to give threads started afterwards an on-disk copy of the test database.

    SQLite's in-memory test database runs in shared-cache mode, where a writer that meets
    another gets "database table is locked" at once instead of waiting out the busy timeout
    as it does in an on-disk database (development, production). Other databases: no-op.
    """

    def copy_to_disk():
        if connection.vendor != "sqlite" or not connection.is_in_memory_db():
            return lambda: None
        path = tmp_path / "threads.sqlite3"
        connection.ensure_connection()
        target = sqlite3.connect(path)
        connection.connection.backup(target)
        # WAL once, here: the threads' connections would each switch it on at their first
        # query, and two switching at the same moment get "database is locked".
        target.execute("PRAGMA journal_mode=WAL")
        target.close()

        def use_in_this_thread():
            this_thread = connections[DEFAULT_DB_ALIAS]
            this_thread.settings_dict = {**this_thread.settings_dict, "NAME": str(path)}

        return use_in_this_thread

    return copy_to_disk


def in_threads(*calls, setup=lambda: None) -> list:
    """Run each call in its own thread, all starting together; their results (or errors) in order."""
    barrier = threading.Barrier(len(calls), timeout=10)
    results = [None] * len(calls)

    def run(index, call):
        setup()
        try:
            barrier.wait()
            results[index] = call()
        except Exception as error:  # noqa: BLE001 - returned to the test, which asserts on it
            results[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_two_people_starting_their_direct_chat_at_the_same_moment_get_one_chat(database_for_threads, alice, bob):
    use_database = database_for_threads()

    results = in_threads(
        lambda: services.get_or_create_direct_chat(user=alice, other=bob),
        lambda: services.get_or_create_direct_chat(user=bob, other=alice),
        setup=use_database,
    )

    assert not [result for result in results if isinstance(result, Exception)]
    (chat_ids, members), *_ = in_threads(
        lambda: (list(Chat.objects.values_list("pk", flat=True)), Membership.objects.count()), setup=use_database
    )
    assert len(chat_ids) == 1
    assert members == 2
    assert [chat.pk for chat, _ in results] == chat_ids * 2
    assert sorted(created for _, created in results) == [False, True]


# Groups


def test_the_creator_of_a_group_is_its_admin_and_the_others_members(group_chat, alice, bob, carol):
    roles = dict(group_chat.memberships.values_list("user__username", "role"))

    assert roles == {"alice": "admin", "bob": "member", "carol": "member"}
    assert group_chat.name == "Book club"


def test_creating_a_group_strips_the_name_and_ignores_the_creator_among_members(alice, bob):
    chat = services.create_group_chat(creator=alice, name="  Team  ", members=[alice, bob, bob])

    assert chat.name == "Team"
    assert chat.memberships.count() == 2


@pytest.mark.parametrize("name", ["", "   ", "x" * 101], ids=["empty", "blank", "too-long"])
def test_a_group_needs_a_name_of_reasonable_length(alice, bob, name):
    with pytest.raises(ValidationError):
        services.create_group_chat(creator=alice, name=name, members=[bob])

    assert not Chat.objects.exists()


def test_a_group_has_at_most_the_configured_number_of_members(settings, alice, bob, carol):
    settings.CHAT_GROUP_MAX_MEMBERS = 2

    with pytest.raises(ValidationError):
        services.create_group_chat(creator=alice, name="Team", members=[bob, carol])


def test_an_admin_renames_the_group(group_chat, alice):
    services.rename_group(chat=group_chat, actor=alice, name=" Readers ")

    group_chat.refresh_from_db()
    assert group_chat.name == "Readers"


@pytest.mark.parametrize(
    "action",
    [
        lambda chat, actor, other: services.rename_group(chat=chat, actor=actor, name="Mine now"),
        lambda chat, actor, other: services.add_members(chat=chat, actor=actor, users=[other]),
        lambda chat, actor, other: services.remove_member(chat=chat, actor=actor, user=other),
        lambda chat, actor, other: services.delete_group(chat=chat, actor=actor),
    ],
    ids=["rename", "add", "remove", "delete"],
)
def test_admin_actions_are_permission_denied_for_members(group_chat, bob, carol, dave, action):
    other = dave if action.__name__ == "add" else carol

    with pytest.raises(PermissionDenied):
        action(group_chat, bob, other)

    group_chat.refresh_from_db()
    assert group_chat.name == "Book club"
    assert group_chat.memberships.count() == 3


def test_direct_chats_have_no_admin_actions(direct_chat, alice):
    with pytest.raises(PermissionDenied):
        services.rename_group(chat=direct_chat, actor=alice, name="Ours")


def test_added_members_join_with_the_history_read_and_existing_members_are_left_alone(group_chat, alice, bob, dave):
    message = services.send_message(chat=group_chat, sender=bob, body="before dave")

    added = services.add_members(chat=group_chat, actor=alice, users=[dave, bob])

    assert added == [dave]
    dave_membership = membership(group_chat, dave)
    assert (dave_membership.role, dave_membership.last_read_message_id, dave_membership.unread_count) == (
        Membership.Role.MEMBER,
        message.pk,
        0,
    )
    assert membership(group_chat, bob).role == Membership.Role.MEMBER


def test_adding_more_people_than_allowed_at_once_is_a_validation_error(settings, group_chat, alice, dave, make_user):
    settings.CHAT_MAX_MEMBERS_PER_REQUEST = 1

    with pytest.raises(ValidationError):
        services.add_members(chat=group_chat, actor=alice, users=[dave, make_user()])

    assert group_chat.memberships.count() == 3


def test_an_admin_removes_a_member(group_chat, alice, carol):
    services.remove_member(chat=group_chat, actor=alice, user=carol)

    assert not group_chat.memberships.filter(user=carol).exists()


def test_an_admin_leaves_rather_than_removes_themselves(group_chat, alice):
    with pytest.raises(ValidationError):
        services.remove_member(chat=group_chat, actor=alice, user=alice)

    assert group_chat.memberships.filter(user=alice).exists()


def test_a_member_leaving_keeps_the_admin(group_chat, alice, bob):
    deleted = services.leave_group(chat=group_chat, user=bob)

    assert not deleted
    assert dict(group_chat.memberships.values_list("user__username", "role")) == {"alice": "admin", "carol": "member"}


@pytest.mark.parametrize(("earlier", "later"), [("bob", "carol"), ("carol", "bob")])
def test_when_the_last_admin_leaves_the_longest_standing_member_becomes_admin(group_chat, alice, earlier, later):
    now = timezone.now()
    Membership.objects.filter(chat=group_chat, user__username=earlier).update(joined_at=now - timedelta(days=2))
    Membership.objects.filter(chat=group_chat, user__username=later).update(joined_at=now - timedelta(days=1))

    services.leave_group(chat=group_chat, user=alice)

    assert dict(group_chat.memberships.values_list("user__username", "role")) == {earlier: "admin", later: "member"}


def test_when_the_last_member_leaves_the_group_is_deleted(group_chat, alice, bob, carol):
    services.send_message(chat=group_chat, sender=bob, body="bye")

    results = [services.leave_group(chat=group_chat, user=user) for user in (alice, bob, carol)]

    assert results == [False, False, True]
    assert not Chat.objects.exists()
    assert not Message.objects.exists()


def test_a_direct_chat_cannot_be_left(direct_chat, alice):
    with pytest.raises(ValidationError):
        services.leave_group(chat=direct_chat, user=alice)


def test_an_admin_deletes_the_group_for_everyone(group_chat, alice, bob):
    services.send_message(chat=group_chat, sender=bob, body="hello")

    services.delete_group(chat=group_chat, actor=alice)

    assert not Chat.objects.exists()
    assert not Membership.objects.exists()
    assert not Message.objects.exists()


# Soft delete


def test_deleting_a_chat_for_yourself_hides_it_only_for_you(direct_chat, alice, bob):
    services.send_message(chat=direct_chat, sender=bob, body="unread")

    services.soft_delete_chat(chat=direct_chat, user=alice)

    assert [row.chat for row in selectors.inbox_rows(user=alice)[0]] == []
    assert [row.chat for row in selectors.inbox_rows(user=bob)[0]] == [direct_chat]
    assert membership(direct_chat, alice).unread_count == 0


def test_a_new_message_brings_a_deleted_chat_back_with_only_the_newer_history(direct_chat, alice, bob):
    old = send_many(direct_chat, bob, 3, prefix="old")
    services.soft_delete_chat(chat=direct_chat, user=alice)

    new = services.send_message(chat=direct_chat, sender=bob, body="new")

    alice_membership = membership(direct_chat, alice)
    assert not alice_membership.is_hidden
    assert alice_membership.unread_count == 1
    assert selectors.messages_page(membership=alice_membership).messages == [new]
    assert selectors.messages_page(membership=membership(direct_chat, bob)).messages == [*old, new]
    assert selectors.total_unread(user=alice) == 1


# Unread counts


def test_sending_counts_the_message_unread_for_everybody_but_the_sender(group_chat, alice, bob, carol):
    services.send_message(chat=group_chat, sender=bob, body="one")
    message = services.send_message(chat=group_chat, sender=bob, body="two")

    assert membership(group_chat, alice).unread_count == 2
    assert membership(group_chat, carol).unread_count == 2
    bob_membership = membership(group_chat, bob)
    assert (bob_membership.unread_count, bob_membership.last_read_message_id) == (0, message.pk)


def test_sending_marks_the_chat_read_for_the_sender(direct_chat, alice, bob):
    send_many(direct_chat, bob, 2)

    services.send_message(chat=direct_chat, sender=alice, body="reply")

    assert membership(direct_chat, alice).unread_count == 0
    assert membership(direct_chat, bob).unread_count == 1


@pytest.mark.parametrize(("body", "client_id"), [("a\ud800b", ""), ("hi", "c\udfff")])
def test_text_that_is_not_unicode_is_refused_and_nothing_is_stored(direct_chat, alice, body, client_id):
    with pytest.raises(ValidationError, match="valid Unicode"):
        services.send_message(chat=direct_chat, sender=alice, body=body, client_id=client_id)

    assert not Message.objects.filter(chat=direct_chat).exists()


def test_mark_read_zeroes_the_unread_count(direct_chat, alice, bob):
    messages = send_many(direct_chat, bob, 3)

    assert services.mark_read(chat=direct_chat, user=alice) == 0

    alice_membership = membership(direct_chat, alice)
    assert (alice_membership.unread_count, alice_membership.last_read_message_id) == (0, messages[-1].pk)


@pytest.mark.parametrize(("read_up_to", "unread"), [(0, 4), (1, 3), (2, 2), (3, 1)])
def test_mark_read_up_to_a_message_leaves_the_later_ones_unread(direct_chat, alice, bob, read_up_to, unread):
    services.send_message(chat=direct_chat, sender=alice, body="mine, never unread for me")
    messages = send_many(direct_chat, bob, 4)
    up_to_id = messages[read_up_to - 1].pk if read_up_to else 0

    assert services.mark_read(chat=direct_chat, user=alice, up_to_id=up_to_id) == unread
    assert membership(direct_chat, alice).unread_count == unread


def test_mark_read_never_moves_the_read_position_back(direct_chat, alice, bob):
    messages = send_many(direct_chat, bob, 3)
    services.mark_read(chat=direct_chat, user=alice)

    assert services.mark_read(chat=direct_chat, user=alice, up_to_id=messages[0].pk) == 0
    assert membership(direct_chat, alice).last_read_message_id == messages[-1].pk


def test_mark_read_past_the_latest_message_stops_at_the_latest(direct_chat, alice, bob):
    messages = send_many(direct_chat, bob, 2)

    services.mark_read(chat=direct_chat, user=alice, up_to_id=messages[-1].pk + 1000)

    assert membership(direct_chat, alice).last_read_message_id == messages[-1].pk


# Sending


def test_a_sent_message_becomes_the_chat_latest_and_bumps_its_activity(direct_chat, alice):
    before = direct_chat.last_activity_at

    message = services.send_message(chat=direct_chat, sender=alice, body="  hello  ")

    direct_chat.refresh_from_db()
    assert message.body == "hello"
    assert direct_chat.last_message == message
    assert direct_chat.last_activity_at == message.created_at >= before


@pytest.mark.parametrize("body", ["", "   \n\t ", "x" * 4001, None], ids=["empty", "whitespace", "too-long", "none"])
def test_invalid_messages_are_rejected_and_nothing_is_saved(direct_chat, alice, bob, body):
    with pytest.raises(ValidationError):
        services.send_message(chat=direct_chat, sender=alice, body=body)

    direct_chat.refresh_from_db()
    assert not Message.objects.exists()
    assert direct_chat.last_message_id is None
    assert membership(direct_chat, bob).unread_count == 0


def test_a_message_of_exactly_the_maximum_length_is_accepted(settings, direct_chat, alice):
    settings.CHAT_MAX_MESSAGE_LENGTH = 10

    services.send_message(chat=direct_chat, sender=alice, body="x" * 10)
    with pytest.raises(ValidationError):
        services.send_message(chat=direct_chat, sender=alice, body="x" * 11)

    assert Message.objects.count() == 1


# Events: every service's on-commit callbacks run without error through the channel layer.


@pytest.mark.parametrize(
    "write",
    [
        lambda chat, admin, member, outsider: services.send_message(chat=chat, sender=member, body="hi"),
        lambda chat, admin, member, outsider: services.mark_read(chat=chat, user=admin),
        lambda chat, admin, member, outsider: services.rename_group(chat=chat, actor=admin, name="New"),
        lambda chat, admin, member, outsider: services.add_members(chat=chat, actor=admin, users=[outsider]),
        lambda chat, admin, member, outsider: services.remove_member(chat=chat, actor=admin, user=member),
        lambda chat, admin, member, outsider: services.leave_group(chat=chat, user=admin),
        lambda chat, admin, member, outsider: services.soft_delete_chat(chat=chat, user=member),
        lambda chat, admin, member, outsider: services.delete_group(chat=chat, actor=admin),
        lambda chat, admin, member, outsider: services.get_or_create_direct_chat(user=admin, other=outsider),
        lambda chat, admin, member, outsider: services.create_group_chat(creator=admin, name="G", members=[outsider]),
    ],
    ids=["send", "mark-read", "rename", "add", "remove", "leave", "soft-delete", "delete", "direct", "group"],
)
def test_each_write_sends_its_events_on_commit(django_capture_on_commit_callbacks, group_chat, alice, bob, dave, write):
    services.send_message(chat=group_chat, sender=bob, body="unread for alice")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        write(group_chat, alice, bob, dave)

    assert callbacks


# Purge


@pytest.fixture
def deleted_by_everyone(direct_chat, alice, bob):
    services.send_message(chat=direct_chat, sender=alice, body="soon gone")
    for user in (alice, bob):
        services.soft_delete_chat(chat=direct_chat, user=user)
    return direct_chat


def test_purge_deletes_chats_every_member_deleted_and_keeps_the_others(deleted_by_everyone, group_chat, bob):
    services.soft_delete_chat(chat=group_chat, user=bob)

    assert services.purge_deleted_chats() == [deleted_by_everyone.pk]

    assert list(Chat.objects.all()) == [group_chat]
    assert not Message.objects.filter(chat_id=deleted_by_everyone.pk).exists()


def test_purge_dry_run_reports_and_changes_nothing(deleted_by_everyone):
    assert services.purge_deleted_chats(dry_run=True) == [deleted_by_everyone.pk]

    assert Chat.objects.filter(pk=deleted_by_everyone.pk).exists()
    assert Message.objects.count() == 1


@pytest.mark.parametrize(("idle_days", "older_than", "purged"), [(10, 30, False), (10, 7, True), (0, 0, True)])
def test_purge_keeps_chats_active_more_recently_than_older_than(deleted_by_everyone, idle_days, older_than, purged):
    Chat.objects.filter(pk=deleted_by_everyone.pk).update(last_activity_at=timezone.now() - timedelta(days=idle_days))

    ids = services.purge_deleted_chats(older_than_days=older_than)

    assert (ids == [deleted_by_everyone.pk]) is purged
    assert Chat.objects.filter(pk=deleted_by_everyone.pk).exists() is not purged


class BrokenLayer:
    async def group_send(self, group, event):
        raise ConnectionError("Redis is restarting")


@pytest.mark.django_db(transaction=True)
def test_a_failing_channel_layer_never_fails_a_saved_message(monkeypatch, alice, bob, caplog):
    from chat import events

    chat, _ = services.get_or_create_direct_chat(user=alice, other=bob)
    monkeypatch.setattr(events, "get_channel_layer", BrokenLayer)

    message = services.send_message(chat=chat, sender=alice, body="still saved")

    assert Message.objects.get(pk=message.pk).body == "still saved"
    assert Membership.objects.get(chat=chat, user=bob).unread_count == 1
    assert "Redis is restarting" in caplog.text


def test_mark_read_many_writes_every_member_in_one_go(group_chat, alice, bob, carol, django_assert_max_num_queries):
    first = services.send_message(chat=group_chat, sender=alice, body="one")
    services.send_message(chat=group_chat, sender=alice, body="two")
    services.send_message(chat=group_chat, sender=carol, body="three")

    with django_assert_max_num_queries(6):
        unread = services.mark_read_many(
            marks={(group_chat.pk, bob.pk): first.pk, (group_chat.pk, carol.pk): services.LATEST}
        )

    assert unread == {(group_chat.pk, bob.pk): 2, (group_chat.pk, carol.pk): 0}
    counts = dict(Membership.objects.filter(chat=group_chat).values_list("user__username", "unread_count"))
    assert counts == {"alice": 1, "bob": 2, "carol": 0}


def test_mark_read_many_counts_a_long_backlog_in_the_database(group_chat, alice, bob, monkeypatch):
    monkeypatch.setattr(services, "READ_TAIL_LIMIT", 2)
    messages = [services.send_message(chat=group_chat, sender=alice, body=f"m{i}") for i in range(5)]

    unread = services.mark_read_many(marks={(group_chat.pk, bob.pk): messages[0].pk})

    assert unread == {(group_chat.pk, bob.pk): 4}


def test_mark_read_many_ignores_people_who_are_not_members(group_chat, alice, make_user):
    outsider = make_user("outsider")
    services.send_message(chat=group_chat, sender=alice, body="hi")
    assert services.mark_read_many(marks={(group_chat.pk, outsider.pk): services.LATEST}) == {}


def test_mark_read_of_a_non_member_raises(group_chat, make_user):
    with pytest.raises(Membership.DoesNotExist):
        services.mark_read(chat=group_chat, user=make_user("outsider"))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's row locks")
def test_a_groups_deletion_and_a_members_removal_lock_the_chat_before_they_delete_anything(group_chat, alice, bob):
    """As every send and change of the chat locks it first: a reaction holding the lock and
    waiting for a message row the deletion had already deleted would deadlock with it, and so
    would a removal that deleted its membership row before waiting for the deletion's lock."""
    services.send_message(chat=group_chat, sender=bob, body="soon gone")
    for action, run, lock in [
        ("removal", lambda: services.remove_member(chat=group_chat, actor=alice, user=bob), "FOR NO KEY UPDATE"),
        ("deletion", lambda: services.delete_group(chat=group_chat, actor=alice), "FOR UPDATE"),
    ]:
        with CaptureQueriesContext(connection) as queries:
            run()
        assert chat_lock_before_any_delete([q["sql"] for q in queries.captured_queries]) == lock, action
    assert not Chat.objects.filter(pk=group_chat.pk).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's row locks")
def test_sends_read_marks_changes_and_new_members_lock_the_chat_no_more_than_rows_pointing_at_it_allow(
    alice, bob, carol, dave, group_chat
):
    """Each of them locks the chat's row FOR NO KEY UPDATE, which they all wait for in turn, but
    which an insert of a row pointing at the chat (a socket's presence row) does not: under FOR
    UPDATE, presence rows inserted for several rooms at once deadlocked with read marks. (A
    reaction takes it by updating the chat's change cursor: an UPDATE that changes no key
    column locks the row in that same mode.)"""
    message = services.send_message(chat=group_chat, sender=bob, body="lock me")
    actions = {
        "send": lambda: services.send_message(chat=group_chat, sender=alice, body="and me"),
        "read mark": lambda: services.mark_read(chat=group_chat, user=carol),
        "reaction": lambda: services.toggle_reaction(message=message, user=carol, emoji="👍"),
        "new member": lambda: services.add_members(chat=group_chat, actor=alice, users=[dave]),
        "hide": lambda: services.soft_delete_chat(chat=group_chat, user=carol),
    }
    for action, run in actions.items():
        with CaptureQueriesContext(connection) as queries:
            run()
        chat_locks = [
            q["sql"]
            for q in queries
            if ('FROM "chat_chat"' in q["sql"] and " FOR " in q["sql"]) or q["sql"].startswith('UPDATE "chat_chat"')
        ]
        assert chat_locks, action
        taken_by = chat_locks[0]
        by_cursor = action == "reaction" and taken_by.startswith('UPDATE "chat_chat" SET "change_seq"')
        assert taken_by.endswith("FOR NO KEY UPDATE") or by_cursor, (action, taken_by)
        assert all(sql.endswith("FOR NO KEY UPDATE") for sql in chat_locks if " FOR " in sql), (action, chat_locks)
