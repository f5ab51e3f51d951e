"""Every read of the chat app, through chat.selectors."""

import json
import re
from datetime import timedelta

import pytest
from django.http import Http404
from django.utils import timezone

from chat import events, selectors, services
from chat.models import Membership
from chat.ratelimit import RateLimited


def membership(chat, user) -> Membership:
    return Membership.objects.get(chat=chat, user=user)


def send_many(chat, sender, count):
    return [services.send_message(chat=chat, sender=sender, body=f"message {number}") for number in range(count)]


@pytest.fixture
def three_chats(alice, bob, carol, dave):
    """Three chats of alice's, created in the order direct-bob, direct-carol, group."""
    with_bob = services.get_or_create_direct_chat(user=alice, other=bob)[0]
    with_carol = services.get_or_create_direct_chat(user=alice, other=carol)[0]
    group = services.create_group_chat(creator=dave, name="Team", members=[alice, bob])
    return with_bob, with_carol, group


# Inbox


def test_inbox_lists_chats_by_latest_activity(three_chats, alice, bob, carol):
    with_bob, with_carol, group = three_chats
    services.send_message(chat=with_carol, sender=carol, body="first")
    services.send_message(chat=group, sender=bob, body="second")
    services.send_message(chat=with_bob, sender=bob, body="third")

    rows, has_more = selectors.inbox_rows(user=alice)

    assert [row.chat for row in rows] == [with_bob, group, with_carol]
    assert not has_more


def test_inbox_rows_carry_title_other_person_preview_and_unread(three_chats, alice, bob):
    with_bob, _, group = three_chats
    message = services.send_message(chat=with_bob, sender=bob, body="hi alice")

    rows = {row.chat: row for row in selectors.inbox_rows(user=alice)[0]}

    assert (rows[with_bob].title, rows[with_bob].other_user, rows[with_bob].last_message) == ("Bob", bob, message)
    assert rows[with_bob].unread == 1
    assert (rows[group].title, rows[group].other_user, rows[group].last_message, rows[group].unread) == (
        "Team",
        None,
        None,
        0,
    )


@pytest.mark.parametrize(("offset", "expected_count", "has_more"), [(0, 2, True), (2, 1, False), (3, 0, False)])
def test_inbox_pages_say_whether_more_follow(three_chats, alice, offset, expected_count, has_more):
    rows, more = selectors.inbox_rows(user=alice, offset=offset, limit=2)

    assert (len(rows), more) == (expected_count, has_more)


def test_inbox_page_size_comes_from_the_setting(settings, three_chats, alice):
    settings.CHAT_INBOX_PAGE_SIZE = 1

    rows, has_more = selectors.inbox_rows(user=alice)

    assert (len(rows), has_more) == (1, True)


def test_inbox_hides_the_preview_of_a_cleared_history(direct_chat, alice, bob):
    services.send_message(chat=direct_chat, sender=bob, body="before")
    services.soft_delete_chat(chat=direct_chat, user=alice)
    services.get_or_create_direct_chat(user=alice, other=bob)  # reopen: visible, history cleared

    (row,) = selectors.inbox_rows(user=alice)[0]

    assert row.last_message is None


def test_inbox_runs_the_same_queries_for_few_and_many_chats(django_assert_num_queries, alice, make_user):
    def inbox_queries(chat_count):
        for _ in range(chat_count):
            other = make_user()
            chat = services.get_or_create_direct_chat(user=alice, other=other)[0]
            services.send_message(chat=chat, sender=other, body="hi")
        with django_assert_num_queries(2):
            rows, _ = selectors.inbox_rows(user=alice)
            [(row.title, row.last_message.sender) for row in rows]

    inbox_queries(2)
    inbox_queries(20)


def test_total_unread_sums_visible_chats(three_chats, alice, bob, carol):
    with_bob, with_carol, group = three_chats
    send_many(with_bob, bob, 2)
    send_many(with_carol, carol, 3)
    send_many(group, bob, 4)

    assert selectors.total_unread(user=alice) == 9
    services.mark_read(chat=group, user=alice)
    assert selectors.total_unread(user=alice) == 5
    services.soft_delete_chat(chat=with_carol, user=alice)
    assert selectors.total_unread(user=alice) == 2
    assert selectors.total_unread(user=bob) == 0


def test_unread_by_member_gives_each_member_their_chat_and_total_unread(three_chats, alice, bob, carol, dave):
    with_bob, with_carol, group = three_chats
    send_many(with_carol, carol, 2)
    send_many(group, dave, 3)

    assert selectors.unread_by_member(chat_id=group.pk) == {
        alice.pk: (3, 5),
        bob.pk: (3, 3),
        dave.pk: (0, 0),
    }
    assert selectors.unread_by_member(chat_id=group.pk, excluding={alice.pk, dave.pk}) == {bob.pk: (3, 3)}


# Membership and titles


def test_membership_or_404_returns_the_users_membership_with_the_chat(direct_chat, alice):
    found = selectors.membership_or_404(user=alice, chat_id=direct_chat.pk)

    assert (found.user, found.chat) == (alice, direct_chat)


@pytest.mark.parametrize("chat_id", ["other", "missing", "not-a-number"])
def test_membership_or_404_hides_chats_you_are_not_in(direct_chat, carol, chat_id):
    value = {"other": direct_chat.pk, "missing": 9999, "not-a-number": "abc"}[chat_id]

    with pytest.raises(Http404):
        selectors.membership_or_404(user=carol, chat_id=value)


def test_chat_title_is_the_group_name_or_the_other_person(direct_chat, group_chat, alice, bob):
    assert selectors.chat_title(chat=group_chat, user=alice) == "Book club"
    assert selectors.chat_title(chat=direct_chat, user=alice) == "Bob"
    assert selectors.chat_title(chat=direct_chat, user=bob) == "Alice"


def test_display_name_falls_back_to_username_and_deleted_user(make_user):
    assert selectors.display_name(make_user("zed")) == "zed"
    assert selectors.display_name(None) == "Deleted user"


def test_chat_members_lists_admins_first_then_by_joining(group_chat, alice, bob, carol):
    Membership.objects.filter(chat=group_chat, user=carol).update(joined_at=timezone.now() - timedelta(days=1))

    assert [m.user for m in selectors.chat_members(chat=group_chat)] == [alice, carol, bob]


@pytest.mark.parametrize(
    ("email", "found"),
    [("bob@example.com", True), ("  BOB@Example.COM ", True), ("nobody@example.com", False), ("", False)],
)
def test_find_user_by_email_ignores_case_and_spaces(alice, bob, email, found):
    assert (selectors.find_user_by_email(email=email, looked_up_by=alice) == bob) is found


def test_find_user_by_email_skips_inactive_users(alice, make_user):
    make_user("gone", is_active=False)

    assert selectors.find_user_by_email(email="gone@example.com", looked_up_by=alice) is None


def test_email_lookups_are_charged_before_the_query(alice, bob, settings, django_assert_num_queries):
    settings.CHAT_RATE_LIMITS = {"email_lookup": "3/m"}
    selectors.find_users_by_emails(emails=["bob@example.com", "x@example.com"], looked_up_by=alice)

    with django_assert_num_queries(0), pytest.raises(RateLimited):
        selectors.find_users_by_emails(emails=["carol@example.com", "dave@example.com"], looked_up_by=alice)


# History pages


@pytest.fixture
def history(direct_chat, alice, bob):
    """Seven messages, oldest first, read with pages of three."""
    return send_many(direct_chat, bob, 4) + send_many(direct_chat, alice, 3)


@pytest.fixture
def small_pages(settings):
    settings.CHAT_PAGE_SIZE = 3


def test_the_first_page_is_the_newest_messages_oldest_first(small_pages, direct_chat, alice, history):
    page = selectors.messages_page(membership=membership(direct_chat, alice))

    assert page.messages == history[-3:]
    assert (page.has_older, page.oldest_id, page.newest_id) == (True, history[-3].pk, history[-1].pk)


@pytest.mark.parametrize(
    ("before_index", "expected", "has_older"),
    [(4, slice(1, 4), True), (3, slice(0, 3), False), (1, slice(0, 1), False), (0, slice(0, 0), False)],
)
def test_older_pages_end_just_before_the_given_id(
    small_pages, direct_chat, alice, history, before_index, expected, has_older
):
    page = selectors.messages_page(membership=membership(direct_chat, alice), before=history[before_index].pk)

    assert page.messages == history[expected]
    assert page.has_older is has_older


def test_an_empty_page_has_no_ids(direct_chat, alice):
    page = selectors.messages_page(membership=membership(direct_chat, alice))

    assert (page.messages, page.has_older, page.oldest_id, page.newest_id) == ([], False, None, None)


@pytest.mark.parametrize(("after_index", "expected", "has_newer"), [(0, slice(1, 4), True), (3, slice(4, 7), False)])
def test_pages_after_an_id_catch_up_oldest_first(
    small_pages, direct_chat, alice, history, after_index, expected, has_newer
):
    page = selectors.messages_page(membership=membership(direct_chat, alice), after=history[after_index].pk)

    assert page.messages == history[expected]
    assert (page.has_newer, page.has_older) == (has_newer, False)


@pytest.mark.parametrize("direction", ["newest", "before", "after"])
def test_history_cleared_by_deleting_the_chat_stays_hidden_in_every_direction(direct_chat, alice, bob, direction):
    old = send_many(direct_chat, bob, 3)
    services.soft_delete_chat(chat=direct_chat, user=alice)
    new = send_many(direct_chat, bob, 2)
    arguments = {"newest": {}, "before": {"before": new[-1].pk}, "after": {"after": 0}}[direction]

    page = selectors.messages_page(membership=membership(direct_chat, alice), **arguments)

    assert not set(page.messages) & set(old)
    assert page.has_older is False
    assert selectors.messages_page(membership=membership(direct_chat, bob)).messages == old + new


def test_history_pages_run_the_same_queries_however_long_the_chat(django_assert_num_queries, direct_chat, alice, bob):
    send_many(direct_chat, bob, 120)
    alice_membership = membership(direct_chat, alice)

    with django_assert_num_queries(2):  # the page, and the reactions of all its messages
        page = selectors.messages_page(membership=alice_membership, before=10_000)
        [message.sender for message in page.messages]

    assert len(page.messages) == 50


def test_memberships_of_rooms_opening_together_are_read_in_one_query(alice, bob, carol, django_assert_num_queries):
    team = services.create_group_chat(creator=alice, name="Team", members=[bob])
    direct, _ = services.get_or_create_direct_chat(user=alice, other=carol)
    asked = [(alice.pk, team.pk), (bob.pk, team.pk), (carol.pk, team.pk), (carol.pk, direct.pk), (bob.pk, 2**70)]

    with django_assert_num_queries(1):
        found = selectors.memberships_by_pair(asked)

    assert set(found) == {(alice.pk, team.pk), (bob.pk, team.pk), (carol.pk, direct.pk)}
    assert (found[(bob.pk, team.pk)].user_id, found[(bob.pk, team.pk)].chat_id) == (bob.pk, team.pk)


def test_the_greetings_of_rooms_opening_together_take_three_queries_however_many(
    alice, bob, carol, django_assert_num_queries
):
    """One for the rooms, one for their missed messages, one for those messages' reactions."""
    rooms = [services.create_group_chat(creator=alice, name=f"Room {n}", members=[bob, carol]) for n in range(4)]
    sent = {room.pk: [services.send_message(chat=room, sender=bob, body=f"m{n}") for n in range(3)] for room in rooms}
    services.toggle_reaction(message=sent[rooms[0].pk][2], user=carol, emoji="👍")

    def asks(few_rooms):
        # Per room: a socket that saw the first message, one that saw them all, one that asks nothing.
        return [(room.pk, ask) for room in few_rooms for ask in (sent[room.pk][0].pk, sent[room.pk][2].pk, None)]

    with django_assert_num_queries(3):
        events.room_greetings(asks(rooms[:1]))
    with django_assert_num_queries(3):
        greetings = events.room_greetings([*asks(rooms), (2**60, 0)])  # and a chat that is gone

    assert len(greetings) == 12
    for room in rooms:
        first, second, newest = sent[room.pk]
        behind = json.loads(greetings[(room.pk, first.pk)].text)
        assert behind["last_message_id"] == greetings[(room.pk, first.pk)].last_message_id == newest.pk
        assert [int(id_) for id_ in re.findall(r'data-message-id="(\d+)"', behind["html"])] == [second.pk, newest.pk]
        assert "html" not in json.loads(greetings[(room.pk, newest.pk)].text)
        assert "html" not in json.loads(greetings[(room.pk, None)].text)
    assert "👍" in json.loads(greetings[(rooms[0].pk, sent[rooms[0].pk][0].pk)].text)["html"]
