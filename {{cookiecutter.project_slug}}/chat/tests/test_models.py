"""The guarantees the database keeps by itself, whatever the Python code does."""

import pytest
from django.db import IntegrityError, transaction

from chat.models import Chat, Membership, Message


def test_a_second_direct_chat_for_the_same_pair_is_rejected_by_the_database(direct_chat, alice):
    with pytest.raises(IntegrityError), transaction.atomic():
        Chat.objects.create(kind=Chat.Kind.DIRECT, direct_key=direct_chat.direct_key, created_by=alice)


def test_groups_need_no_direct_key_and_may_share_a_name(alice):
    Chat.objects.create(kind=Chat.Kind.GROUP, name="Team")
    Chat.objects.create(kind=Chat.Kind.GROUP, name="Team")

    assert Chat.objects.filter(kind=Chat.Kind.GROUP, direct_key__isnull=True).count() == 2


def test_a_user_is_a_member_of_a_chat_at_most_once(direct_chat, alice):
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(chat=direct_chat, user=alice)


@pytest.mark.parametrize(
    ("kind", "direct_key"),
    [(Chat.Kind.DIRECT, None), (Chat.Kind.GROUP, "1:2"), ("other", None)],
    ids=["direct-without-key", "group-with-key", "unknown-kind"],
)
def test_check_constraint_ties_the_direct_key_to_direct_chats(db, kind, direct_key):
    with pytest.raises(IntegrityError), transaction.atomic():
        Chat.objects.create(kind=kind, name="x", direct_key=direct_key)


def test_deleting_a_chat_deletes_its_memberships_and_messages(direct_chat, alice):
    Message.objects.create(chat=direct_chat, sender=alice, body="hi")

    direct_chat.delete()

    assert not Membership.objects.exists()
    assert not Message.objects.exists()


def test_deleting_the_last_message_clears_the_chat_pointer_to_it(direct_chat, alice):
    message = Message.objects.create(chat=direct_chat, sender=alice, body="hi")
    Chat.objects.filter(pk=direct_chat.pk).update(last_message=message)

    message.delete()

    direct_chat.refresh_from_db()
    assert direct_chat.last_message_id is None


def test_messages_of_a_deleted_user_stay_without_a_sender(direct_chat, alice, bob):
    message = Message.objects.create(chat=direct_chat, sender=bob, body="hi")

    bob.delete()

    message.refresh_from_db()
    assert message.sender_id is None
    assert Membership.objects.filter(chat=direct_chat).get().user == alice


@pytest.mark.parametrize(
    ("make_chat", "expected"),
    [
        (lambda: Chat(kind=Chat.Kind.GROUP, name="Team"), "Team"),
        (lambda: Chat(pk=7, kind=Chat.Kind.DIRECT), "Direct chat 7"),
    ],
    ids=["group", "direct"],
)
def test_chat_str_names_the_chat(make_chat, expected):
    assert str(make_chat()) == expected
