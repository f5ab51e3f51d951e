"""The unread divider, muting a chat and blocking a person: services, selectors and routes."""

import re

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse

from chat import selectors, services
from chat.models import Block, Membership, Message

HTMX = {"HX-Request": "true"}
WIDGET = {"HX-Request": "true", "HX-Target": "chat-widget-panel"}


def membership(chat, user) -> Membership:
    return Membership.objects.get(chat=chat, user=user)


def send(chat, sender, *bodies) -> list[Message]:
    return [services.send_message(chat=chat, sender=sender, body=body) for body in bodies]


def logged_in(client, user):
    client.force_login(user)
    return client


# --- the unread divider --------------------------------------------------------------


def divider_before(html: str) -> int | None:
    """The id of the message just after the "New messages" divider, None without one."""
    found = re.search(r'data-unread-divider.*?data-message-id="(\d+)"', html, re.S)
    return int(found.group(1)) if found else None


@pytest.mark.parametrize("url_name", ["chat:room", "chat:widget_room"])
def test_opening_a_room_puts_the_divider_above_the_first_unread_message(client, alice, bob, direct_chat, url_name):
    send(direct_chat, bob, "read before")
    services.mark_read(chat=direct_chat, user=alice)
    send(direct_chat, alice, "my reply")
    first_unread, _ = send(direct_chat, bob, "new one", "new two")

    response = logged_in(client, alice).get(reverse(url_name, args=[direct_chat.pk]), headers=HTMX)

    html = response.content.decode()
    assert html.count("data-unread-divider") == 1
    assert divider_before(html) == first_unread.pk
    assert "New messages" in html


def test_the_divider_shows_the_unread_state_of_the_opening_and_is_gone_next_time(client, alice, bob, direct_chat):
    send(direct_chat, bob, "hello")
    client = logged_in(client, alice)
    url = reverse("chat:room", args=[direct_chat.pk])

    assert "data-unread-divider" in client.get(url).content.decode()
    assert membership(direct_chat, alice).unread_count == 0  # opening it marked it read
    assert "data-unread-divider" not in client.get(url).content.decode()


def test_no_divider_without_unread_messages_nor_above_your_own(client, alice, bob, direct_chat):
    send(direct_chat, alice, "I wrote", "and wrote")

    html = logged_in(client, alice).get(reverse("chat:room", args=[direct_chat.pk])).content.decode()

    assert "data-unread-divider" not in html


def test_more_unread_than_a_page_are_all_shown_below_the_divider(client, settings, alice, bob, direct_chat):
    settings.CHAT_PAGE_SIZE = 5
    send(direct_chat, bob, *[f"old {n}" for n in range(10)])
    services.mark_read(chat=direct_chat, user=alice)
    unread = send(direct_chat, bob, *[f"new {n}" for n in range(8)])

    html = logged_in(client, alice).get(reverse("chat:room", args=[direct_chat.pk])).content.decode()

    assert divider_before(html) == unread[0].pk
    # The unread ones, and a few read ones above them for context.
    assert html.count("data-message-id=") == len(unread) + selectors.UNREAD_CONTEXT


def test_a_room_far_behind_shows_at_most_the_unread_page_maximum(settings, alice, bob, direct_chat, monkeypatch):
    settings.CHAT_PAGE_SIZE = 5
    monkeypatch.setattr(selectors, "UNREAD_PAGE_MAX", 12)
    unread = send(direct_chat, bob, *[f"new {n}" for n in range(20)])

    page = selectors.room_page(membership=membership(direct_chat, alice))

    assert len(page.messages) == 12 and page.has_older
    # The first unread message is on an older page: the divider tops what is shown.
    assert selectors.first_unread_id(membership=membership(direct_chat, alice), page=page) == unread[8].pk


def test_the_room_has_a_jump_to_latest_button_hidden_until_needed(client, alice, direct_chat):
    html = logged_in(client, alice).get(reverse("chat:room", args=[direct_chat.pk])).content.decode()
    assert re.search(r"<button[^>]*data-jump-latest[^>]*hidden", html, re.S)
    assert f'aria-controls="message-list-{direct_chat.pk}"' in html


# --- mute ----------------------------------------------------------------------------


def test_a_muted_chat_keeps_its_unread_count_but_leaves_the_total(alice, bob, group_chat, direct_chat):
    services.set_chat_muted(chat=group_chat, user=alice, muted=True)
    send(group_chat, bob, "in the muted group", "and again")
    send(direct_chat, bob, "direct")

    assert membership(group_chat, alice).unread_count == 2
    assert selectors.total_unread(user=alice) == 1
    assert selectors.total_unread_by_user(user_ids=[alice.pk]) == {alice.pk: 1}
    rows = {row.chat.pk: row for row in selectors.inbox_rows(user=alice)[0]}
    assert (rows[group_chat.pk].unread, rows[group_chat.pk].membership.is_muted) == (2, True)

    services.set_chat_muted(chat=group_chat, user=alice, muted=False)
    assert selectors.total_unread(user=alice) == 3


def test_muting_is_per_member(alice, bob, group_chat):
    services.set_chat_muted(chat=group_chat, user=alice, muted=True)
    send(group_chat, alice, "hi")
    assert selectors.total_unread(user=bob) == 1


def test_muting_a_chat_you_are_not_in_is_refused(dave, group_chat):
    with pytest.raises(Membership.DoesNotExist):
        services.set_chat_muted(chat=group_chat, user=dave, muted=True)


def test_the_mute_route_mutes_and_unmutes(client, alice, bob, group_chat):
    client = logged_in(client, alice)
    url = reverse("chat:mute", args=[group_chat.pk])

    response = client.post(url, {"muted": "yes"}, follow=True)
    assert membership(group_chat, alice).is_muted
    html = response.content.decode()
    assert "Chat muted." in html and "Unmute chat" in html
    assert f'aria-describedby="mute-state-{group_chat.pk}"' in html
    assert f'id="mute-state-{group_chat.pk}"' in html

    client.post(url, {"muted": "no"})
    assert not membership(group_chat, alice).is_muted


def test_the_mute_route_in_the_widget_answers_with_the_info_view(client, alice, group_chat):
    response = logged_in(client, alice).post(
        reverse("chat:mute", args=[group_chat.pk]), {"muted": "yes"}, headers=WIDGET
    )
    assert response.status_code == 200
    assert 'hx-target="#chat-widget-panel"' in response.content.decode()
    assert f'aria-describedby="mute-state-widget-{group_chat.pk}"' in response.content.decode()
    assert "Unmute chat" in response.content.decode()


@pytest.mark.parametrize("data", [{}, {"muted": "maybe"}, {"muted": ""}])
def test_the_mute_route_refuses_bad_input(client, alice, group_chat, data):
    response = logged_in(client, alice).post(reverse("chat:mute", args=[group_chat.pk]), data)
    assert response.status_code == 400
    assert not membership(group_chat, alice).is_muted


def test_muted_chats_show_as_muted_in_the_list_and_not_in_the_badge(client, alice, bob, group_chat):
    services.set_chat_muted(chat=group_chat, user=alice, muted=True)
    send(group_chat, bob, "psst")

    html = logged_in(client, alice).get(reverse("chat:list")).content.decode()

    row = re.search(r"<a class=\"chat-row[^>]*>.*?</a>", html, re.S).group(0)
    assert "data-muted" in row and "(muted)" in row
    assert re.search(r"data-chat-unread\s*>1<", row)
    assert re.search(r"data-total-unread\s+title=\"Unread messages\"\s+hidden", html)


# --- block ---------------------------------------------------------------------------


def test_the_database_holds_one_block_per_pair_and_none_of_yourself(alice, bob):
    Block.objects.create(blocker=alice, blocked=bob)
    Block.objects.create(blocker=bob, blocked=alice)  # each way is its own block
    with pytest.raises(IntegrityError), transaction.atomic():
        Block.objects.create(blocker=alice, blocked=bob)
    with pytest.raises(IntegrityError), transaction.atomic():
        Block.objects.create(blocker=alice, blocked=alice)


def test_blocking_yourself_is_refused(alice):
    with pytest.raises(ValidationError):
        services.block_user(blocker=alice, blocked=alice)


def test_blocking_twice_and_unblocking_someone_not_blocked_change_nothing(alice, bob):
    assert services.block_user(blocker=alice, blocked=bob) is True
    assert services.block_user(blocker=alice, blocked=bob) is False
    assert Block.objects.count() == 1
    assert services.unblock_user(blocker=bob, blocked=alice) is False
    assert services.unblock_user(blocker=alice, blocked=bob) is True
    assert not Block.objects.exists()


def test_a_blocked_person_cannot_send_in_the_direct_chat_and_nothing_is_stored(alice, bob, direct_chat):
    services.block_user(blocker=alice, blocked=bob)

    with pytest.raises(services.Blocked, match="can’t send messages to this person"):
        services.send_message(chat=direct_chat, sender=bob, body="let me in")
    with pytest.raises(services.Blocked, match="You blocked this person"):
        services.send_message(chat=direct_chat, sender=alice, body="one more thing")

    assert not Message.objects.filter(chat=direct_chat).exists()
    assert membership(direct_chat, alice).unread_count == 0


def test_unblocking_lets_messages_through_again(alice, bob, direct_chat):
    services.block_user(blocker=alice, blocked=bob)
    services.unblock_user(blocker=alice, blocked=bob)
    assert services.send_message(chat=direct_chat, sender=bob, body="hi again").pk


def test_a_blocked_person_still_writes_in_shared_groups(alice, bob, group_chat):
    services.block_user(blocker=alice, blocked=bob)
    assert services.send_message(chat=group_chat, sender=bob, body="to the group").pk


def test_a_blocked_person_cannot_start_a_direct_chat_but_the_blocker_can(alice, bob, carol):
    services.block_user(blocker=alice, blocked=bob)

    with pytest.raises(services.Blocked, match="can’t start a chat with this person"):
        services.get_or_create_direct_chat(user=bob, other=alice)

    assert services.get_or_create_direct_chat(user=alice, other=bob)[1] is True
    assert services.get_or_create_direct_chat(user=bob, other=carol)[1] is True


def test_a_blocked_person_cannot_bring_back_a_direct_chat_they_deleted(alice, bob, direct_chat):
    services.soft_delete_chat(chat=direct_chat, user=bob)
    services.block_user(blocker=alice, blocked=bob)

    with pytest.raises(services.Blocked):
        services.get_or_create_direct_chat(user=bob, other=alice)
    assert membership(direct_chat, bob).is_hidden


@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
def test_the_send_route_refuses_a_blocked_sender_with_403_and_says_why(client, alice, bob, direct_chat, htmx):
    services.block_user(blocker=alice, blocked=bob)

    headers = HTMX if htmx else {}
    response = logged_in(client, bob).post(reverse("chat:send", args=[direct_chat.pk]), {"body": "hi"}, headers=headers)

    assert response.status_code == 403
    assert "can’t send messages to this person" in response.content.decode()
    if htmx:  # in the form's error slot, where the message was typed
        assert response["HX-Retarget"] == f"#send-error-{direct_chat.pk}"
    assert not Message.objects.exists()


def test_the_new_chat_route_tells_a_blocked_person_only_that_they_cannot(client, alice, bob):
    services.block_user(blocker=alice, blocked=bob)

    response = logged_in(client, bob).post(reverse("chat:new"), {"email": alice.email}, headers=HTMX)

    assert response.status_code == 403
    html = response.content.decode()
    assert "You can’t start a chat with this person." in html
    assert "block" not in html.lower()  # what they are told does not say why
    assert not Membership.objects.filter(user=bob).exists()


def test_the_info_page_of_a_direct_chat_blocks_and_unblocks_the_other_person(client, alice, bob, direct_chat):
    client = logged_in(client, alice)
    info = reverse("chat:info", args=[direct_chat.pk])
    assert "Block Bob" in client.get(info).content.decode()

    response = client.post(reverse("chat:block", args=[direct_chat.pk]), {"user_id": bob.pk}, follow=True)

    assert Block.objects.filter(blocker=alice, blocked=bob).exists()
    html = response.content.decode()
    assert "You blocked Bob." in html and "Unblock Bob" in html and "Blocked" in html

    client.post(reverse("chat:unblock", args=[direct_chat.pk]), {"user_id": bob.pk})
    assert not Block.objects.exists()


def test_blocking_from_the_widget_answers_with_the_info_view(client, alice, bob, direct_chat):
    client = logged_in(client, alice)

    response = client.post(reverse("chat:block", args=[direct_chat.pk]), {"user_id": bob.pk}, headers=WIDGET)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Unblock Bob" in html and 'hx-post="/chat/' in html
    assert Block.objects.filter(blocker=alice, blocked=bob).exists()


def test_the_info_page_of_a_group_has_a_block_button_per_other_member(client, alice, group_chat):
    html = logged_in(client, alice).get(reverse("chat:info", args=[group_chat.pk])).content.decode()
    assert 'aria-label="Block Bob"' in html and 'aria-label="Block Carol"' in html
    assert 'aria-label="Block Alice"' not in html


def test_someone_blocked_who_left_the_group_can_still_be_unblocked_from_its_info_page(client, alice, bob, group_chat):
    services.block_user(blocker=alice, blocked=bob)
    services.leave_group(chat=group_chat, user=bob)
    client = logged_in(client, alice)

    html = client.get(reverse("chat:info", args=[group_chat.pk])).content.decode()

    assert "Other people you blocked" in html and 'aria-label="Unblock Bob"' in html
    client.post(reverse("chat:unblock", args=[group_chat.pk]), {"user_id": bob.pk})
    assert not Block.objects.exists()
    assert "Other people you blocked" not in client.get(reverse("chat:info", args=[group_chat.pk])).content.decode()


def test_blocked_members_messages_are_marked_for_collapsing_in_the_room(client, alice, bob, group_chat):
    send(group_chat, bob, "noise")
    services.block_user(blocker=alice, blocked=bob)

    html = logged_in(client, alice).get(reverse("chat:room", args=[group_chat.pk])).content.decode()

    assert f'data-blocked-ids="{bob.pk}"' in html
    assert f'data-sender-id="{bob.pk}"' in html


def test_only_the_blocker_sees_the_block(client, alice, bob, carol, group_chat):
    services.block_user(blocker=alice, blocked=bob)
    html = logged_in(client, carol).get(reverse("chat:room", args=[group_chat.pk])).content.decode()
    assert 'data-blocked-ids=""' in html


@pytest.mark.parametrize(
    ("route", "data", "status"),
    [
        ("chat:block", {}, 400),
        ("chat:block", {"user_id": "bob"}, 400),
        ("chat:block", {"user_id": "-1"}, 400),
        ("chat:block", {"user_id": str(2**70)}, 400),
        ("chat:block", {"user_id": "999999"}, 404),  # nobody
        ("chat:block", {"user_id": "dave"}, 404),  # somebody not in the chat
        ("chat:block", {"user_id": "alice"}, 400),  # yourself
        ("chat:unblock", {"user_id": "999999"}, 404),
        ("chat:unblock", {}, 400),
    ],
)
def test_block_routes_refuse_bad_input(client, alice, dave, group_chat, route, data, status):
    names = {"alice": alice.pk, "dave": dave.pk}
    data = {key: str(names.get(value, value)) for key, value in data.items()}

    response = logged_in(client, alice).post(reverse(route, args=[group_chat.pk]), data)

    assert response.status_code == status
    assert not Block.objects.exists()


@pytest.mark.parametrize("route", ["chat:mute", "chat:block", "chat:unblock"])
def test_people_routes_are_404_for_chats_you_are_not_in_and_for_unknown_chats(client, bob, dave, group_chat, route):
    client = logged_in(client, dave)
    data = {"muted": "yes", "user_id": bob.pk}
    assert client.post(reverse(route, args=[group_chat.pk]), data).status_code == 404
    assert client.post(reverse(route, args=[987654]), data).status_code == 404
    assert not Block.objects.exists() and not Membership.objects.filter(is_muted=True).exists()


@pytest.mark.parametrize("route", ["chat:mute", "chat:block", "chat:unblock"])
def test_people_routes_take_only_posts_with_a_csrf_token(alice, bob, group_chat, route):
    url = reverse(route, args=[group_chat.pk])
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    assert client.get(url).status_code == 405
    assert client.post(url, {"muted": "yes", "user_id": bob.pk}).status_code == 403
    assert not Block.objects.exists() and not Membership.objects.filter(is_muted=True).exists()


@pytest.mark.parametrize("route", ["chat:mute", "chat:block", "chat:unblock"])
def test_people_routes_send_anonymous_people_to_log_in(client, bob, group_chat, route):
    response = client.post(reverse(route, args=[group_chat.pk]), {"muted": "yes", "user_id": bob.pk})
    assert response.status_code == 302 and "/login/" in response["Location"]
