"""What people can do through the chat pages and HTMX fragments."""

import re
from datetime import UTC, datetime

import pytest
from django.template import TemplateDoesNotExist
from django.template.loader import get_template, render_to_string
from django.urls import reverse

from chat import services
from chat.context_processors import chat_widget
from chat.models import Chat, Membership, Message

HTMX = {"HX-Request": "true"}
WIDGET = {**HTMX, "HX-Target": "chat-widget-panel"}


def message_ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'data-message-id="(\d+)"', html)]


def send_many(chat, sender, count, prefix="message"):
    return [services.send_message(chat=chat, sender=sender, body=f"{prefix} {n}") for n in range(count)]


# --- starting a direct chat ---------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("bob@example.com", "Found: <strong>Bob</strong>"),
        ("BOB@example.com", "Found: <strong>Bob</strong>"),
        ("nobody@example.com", "Not found"),
        ("alice@example.com", "your own e-mail"),
        ("not-an-email", "full e-mail address"),
    ],
)
def test_check_user_says_whether_an_email_has_an_account(alice_client, bob, email, expected):
    response = alice_client.get(reverse("chat:check_user"), {"email": email}, headers=HTMX)

    assert response.status_code == 200
    assert expected in response.content.decode()


def test_check_user_with_no_email_says_nothing(alice_client):
    response = alice_client.get(reverse("chat:check_user"))

    assert response.status_code == 200
    assert response.content.decode().strip() == ""


def test_new_chat_by_email_creates_the_direct_chat_and_opens_it(alice_client, alice, bob):
    response = alice_client.post(reverse("chat:new"), {"email": "bob@example.com"})

    chat = Chat.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("chat:room", args=[chat.pk])
    assert chat.kind == Chat.Kind.DIRECT
    assert set(chat.memberships.values_list("user_id", flat=True)) == {alice.pk, bob.pk}


def test_new_chat_with_someone_you_already_chat_with_opens_that_chat(alice_client, direct_chat):
    response = alice_client.post(reverse("chat:new"), {"email": "bob@example.com"}, headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("chat:room", args=[direct_chat.pk])
    assert Chat.objects.count() == 1


@pytest.mark.parametrize(
    ("email", "error"),
    [("alice@example.com", "your own e-mail"), ("ghost@example.com", "Nobody with this e-mail"), ("", "required")],
)
def test_new_chat_with_yourself_or_an_unknown_email_is_a_form_error(alice_client, email, error):
    response = alice_client.post(reverse("chat:new"), {"email": email}, headers=HTMX)

    assert response.status_code == 400
    assert error in response.content.decode()
    assert "<form" in response.content.decode()
    assert not Chat.objects.exists()


def test_new_chat_page_without_htmx_is_a_full_page(alice_client):
    response = alice_client.get(reverse("chat:new"))

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "chat/new_chat.html"


# --- groups --------------------------------------------------------------------------


def test_new_group_makes_the_creator_admin_of_the_named_group(alice_client, alice, bob, carol):
    response = alice_client.post(
        reverse("chat:new_group"), {"name": "Climbing", "members": "bob@example.com,\nCarol@example.com"}
    )

    chat = Chat.objects.get()
    assert response["Location"] == reverse("chat:room", args=[chat.pk])
    assert chat.name == "Climbing"
    roles = dict(chat.memberships.values_list("user_id", "role"))
    assert roles == {alice.pk: "admin", bob.pk: "member", carol.pk: "member"}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"name": "", "members": "bob@example.com"}, "required"),
        ({"name": "Trip", "members": "bob@example.com ghost@example.com"}, "ghost@example.com"),
        ({"name": "Trip", "members": "bob@ example"}, "Not e-mail addresses"),
        ({"name": "Trip", "members": "alice@example.com"}, "at least one other person"),
        ({"name": "x" * 101, "members": "bob@example.com"}, "at most 100 characters"),
    ],
)
def test_new_group_with_bad_input_re_renders_the_form_with_the_error(alice_client, bob, data, error):
    response = alice_client.post(reverse("chat:new_group"), data, headers=HTMX)

    assert response.status_code == 400
    assert error in response.content.decode()
    assert not Chat.objects.exists()


def test_admin_renames_the_group(alice_client, group_chat):
    response = alice_client.post(reverse("chat:edit", args=[group_chat.pk]), {"action": "rename", "name": "Poetry"})

    assert response.status_code == 302
    group_chat.refresh_from_db()
    assert group_chat.name == "Poetry"


def test_renaming_to_a_blank_name_shows_the_error(alice_client, group_chat):
    response = alice_client.post(reverse("chat:edit", args=[group_chat.pk]), {"action": "rename", "name": "  "})

    assert response.status_code == 400
    assert "required" in response.content.decode()
    group_chat.refresh_from_db()
    assert group_chat.name == "Book club"


def test_admin_adds_a_member_by_email(alice_client, group_chat, dave):
    response = alice_client.post(
        reverse("chat:edit", args=[group_chat.pk]), {"action": "add", "email": "dave@example.com"}, follow=True
    )

    assert Membership.objects.filter(chat=group_chat, user=dave, role="member").exists()
    assert "Member added." in response.content.decode()


def test_adding_an_unknown_email_is_a_form_error(alice_client, group_chat):
    response = alice_client.post(
        reverse("chat:edit", args=[group_chat.pk]), {"action": "add", "email": "ghost@example.com"}
    )

    assert response.status_code == 400
    assert "Nobody with this e-mail" in response.content.decode()


def test_admin_removes_a_member(alice_client, group_chat, carol):
    response = alice_client.post(
        reverse("chat:edit", args=[group_chat.pk]), {"action": "remove", "user_id": carol.pk}, follow=True
    )

    assert not Membership.objects.filter(chat=group_chat, user=carol).exists()
    assert "Carol was removed" in response.content.decode()


def test_edit_page_lists_members_with_remove_buttons_except_for_yourself(alice_client, group_chat, alice, bob):
    content = alice_client.get(reverse("chat:edit", args=[group_chat.pk])).content.decode()

    assert f'name="user_id" value="{bob.pk}"' in content
    assert f'name="user_id" value="{alice.pk}"' not in content


def test_member_leaves_the_group_and_it_leaves_their_list(client, bob, group_chat):
    client.force_login(bob)

    response = client.post(reverse("chat:leave", args=[group_chat.pk]), follow=True)

    assert not Membership.objects.filter(chat=group_chat, user=bob).exists()
    assert "You left “Book club”." in response.content.decode()
    assert f'data-chat-id="{group_chat.pk}"' not in response.content.decode()


def test_leaving_from_the_widget_shows_the_widget_list(client, bob, group_chat):
    client.force_login(bob)

    response = client.post(reverse("chat:leave", args=[group_chat.pk]), headers=WIDGET)

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "chat/partials/widget_response_list.html"


def test_admin_deletes_the_group_for_everyone(alice_client, group_chat):
    send_many(group_chat, group_chat.created_by, 3)

    response = alice_client.post(reverse("chat:delete_group", args=[group_chat.pk]), headers=HTMX)

    assert response["HX-Redirect"] == reverse("chat:list")
    assert not Chat.objects.filter(pk=group_chat.pk).exists()
    assert not Message.objects.exists()


# --- soft delete ---------------------------------------------------------------------


def test_deleted_chat_disappears_and_a_new_message_brings_back_only_the_new_history(alice_client, bob, direct_chat):
    old = services.send_message(chat=direct_chat, sender=bob, body="before the delete")
    alice_client.post(reverse("chat:delete", args=[direct_chat.pk]))
    assert f'data-chat-id="{direct_chat.pk}"' not in alice_client.get(reverse("chat:list")).content.decode()

    new = services.send_message(chat=direct_chat, sender=bob, body="after the delete")

    inbox = alice_client.get(reverse("chat:list")).content.decode()
    assert f'data-chat-id="{direct_chat.pk}"' in inbox
    assert "after the delete" in inbox
    room = alice_client.get(reverse("chat:room", args=[direct_chat.pk])).content.decode()
    assert message_ids(room) == [new.pk]
    assert old.pk not in message_ids(room)


def test_deleting_for_me_leaves_the_other_persons_history_alone(client, alice, bob, direct_chat):
    sent = services.send_message(chat=direct_chat, sender=bob, body="kept for bob")
    client.force_login(alice)
    client.post(reverse("chat:delete", args=[direct_chat.pk]))

    client.force_login(bob)
    room = client.get(reverse("chat:room", args=[direct_chat.pk])).content.decode()

    assert message_ids(room) == [sent.pk]


# --- read status and unread counts ---------------------------------------------------


def unread_badges(html: str) -> dict[str, str]:
    rows = re.findall(r'data-chat-id="(\d+)".*?data-chat-unread\s*(hidden)?\s*>(\d+\+?)<', html, re.S)
    return {chat_id: ("0" if hidden else count) for chat_id, hidden, count in rows}


def total_badge(html: str) -> str:
    found = re.search(r"data-total-unread[^>]*?(hidden)?\s*>([\d+]+)<", html)
    return "0" if found.group(1) else found.group(2)


def test_every_row_shows_its_unread_count_and_the_navbar_shows_the_total(alice_client, bob, direct_chat, group_chat):
    send_many(direct_chat, bob, 2)
    send_many(group_chat, bob, 3)

    content = alice_client.get(reverse("chat:list")).content.decode()

    assert unread_badges(content) == {str(direct_chat.pk): "2", str(group_chat.pk): "3"}
    assert total_badge(content) == "5"


def test_opening_a_room_marks_it_read(alice_client, alice, bob, direct_chat, group_chat):
    send_many(direct_chat, bob, 2)
    send_many(group_chat, bob, 3)

    room = alice_client.get(reverse("chat:room", args=[direct_chat.pk])).content.decode()

    assert Membership.objects.get(chat=direct_chat, user=alice).unread_count == 0
    assert total_badge(room) == "3"
    assert unread_badges(alice_client.get(reverse("chat:list")).content.decode())[str(direct_chat.pk)] == "0"


def test_opening_a_room_in_the_widget_marks_it_read(alice_client, alice, bob, direct_chat):
    send_many(direct_chat, bob, 2)

    alice_client.get(reverse("chat:widget_room", args=[direct_chat.pk]), headers=HTMX)

    assert Membership.objects.get(chat=direct_chat, user=alice).unread_count == 0


def test_badges_cap_at_99_plus(alice_client, alice, direct_chat):
    Membership.objects.filter(chat=direct_chat, user=alice).update(unread_count=120)

    content = alice_client.get(reverse("chat:list")).content.decode()

    assert unread_badges(content)[str(direct_chat.pk)] == "99+"
    assert total_badge(content) == "99+"


def fab_enabled() -> bool:
    """Projects generated without the widget have no FAB include in base.html."""
    try:
        get_template("includes/chat_widget_fab.html")
    except TemplateDoesNotExist:
        return False
    return True


@pytest.mark.skipif(not fab_enabled(), reason="generated without the chat widget")
def test_fab_shows_the_total_unread(alice_client, bob, direct_chat):
    send_many(direct_chat, bob, 4)

    content = alice_client.get(reverse("chat:new")).content.decode()

    fab = content[content.index("data-chat-widget-toggle") :]
    assert total_badge(fab) == "4"


# --- history -------------------------------------------------------------------------


def test_room_shows_the_newest_page_with_a_load_older_trigger(alice_client, alice, direct_chat, settings):
    settings.CHAT_PAGE_SIZE = 5
    sent = send_many(direct_chat, alice, 12)

    room = alice_client.get(reverse("chat:room", args=[direct_chat.pk])).content.decode()

    assert message_ids(room) == [m.pk for m in sent[-5:]]
    older_url = reverse("chat:messages", args=[direct_chat.pk]) + f"?before={sent[-5].pk}"
    assert f'hx-get="{older_url}"' in room


def test_load_older_walks_back_to_the_start_and_stops(alice_client, alice, direct_chat, settings):
    settings.CHAT_PAGE_SIZE = 5
    sent = send_many(direct_chat, alice, 12)
    url = reverse("chat:messages", args=[direct_chat.pk])

    middle = alice_client.get(url, {"before": sent[-5].pk}, headers=HTMX).content.decode()
    first = alice_client.get(url, {"before": sent[2].pk}, headers=HTMX).content.decode()

    assert message_ids(middle) == [m.pk for m in sent[2:7]]
    assert f"?before={sent[2].pk}" in middle
    assert message_ids(first) == [sent[0].pk, sent[1].pk]
    assert "data-load-older" not in first


def test_a_short_chat_has_no_load_older_trigger(alice_client, alice, direct_chat):
    send_many(direct_chat, alice, 3)

    room = alice_client.get(reverse("chat:room", args=[direct_chat.pk])).content.decode()

    assert "data-load-older" not in room


def test_messages_after_an_id_catch_up_oldest_first_one_page_at_a_time(alice_client, alice, direct_chat, settings):
    settings.CHAT_PAGE_SIZE = 4
    sent = send_many(direct_chat, alice, 10)

    response = alice_client.get(reverse("chat:messages", args=[direct_chat.pk]), {"after": sent[2].pk}, headers=HTMX)

    assert message_ids(response.content.decode()) == [m.pk for m in sent[3:7]]
    assert "data-load-older" not in response.content.decode()


def test_empty_room_shows_the_empty_state(alice_client, direct_chat):
    room = alice_client.get(reverse("chat:room", args=[direct_chat.pk])).content.decode()

    assert "No messages yet" in room


def test_room_page_carries_the_data_attributes_the_scripts_use(alice_client, direct_chat):
    room = alice_client.get(reverse("chat:room", args=[direct_chat.pk])).content.decode()
    pk = direct_chat.pk

    assert re.search(rf'data-chat-room\s+data-chat-id="{pk}"\s+data-messages-url="/chat/{pk}/messages/"', room)
    assert f'id="message-list-{pk}"' in room
    assert "data-presence-count" in room
    assert f'action="{reverse("chat:send", args=[pk])}"' in room
    assert "js/components/chat/message-send.js" in room
    assert "data-chat-widget-toggle" not in room  # no second copy of the room in a widget


# --- sending -------------------------------------------------------------------------


def test_send_saves_the_message_and_returns_its_bubble(alice_client, alice, direct_chat):
    response = alice_client.post(reverse("chat:send", args=[direct_chat.pk]), {"body": "  hi Bob  "}, headers=HTMX)

    message = Message.objects.get()
    content = response.content.decode()
    assert response.status_code == 200
    assert message.body == "hi Bob"
    assert message.sender == alice
    assert f'id="message-{message.pk}"' in content
    assert f'data-sender-id="{alice.pk}"' in content
    assert "bubble--mine" in content


def test_a_send_retried_with_its_client_id_returns_the_first_message_and_stores_it_once(alice_client, direct_chat):
    url = reverse("chat:send", args=[direct_chat.pk])
    first = alice_client.post(url, {"body": "only once", "client_id": "tab-1:42"}, headers=HTMX)
    again = alice_client.post(url, {"body": "only once", "client_id": "tab-1:42"}, headers=HTMX)

    message = Message.objects.get()
    assert message.client_id == "tab-1:42"
    assert first.status_code == again.status_code == 200
    assert f'id="message-{message.pk}"' in again.content.decode()


def test_a_client_id_over_64_characters_is_a_400(alice_client, direct_chat):
    url = reverse("chat:send", args=[direct_chat.pk])
    response = alice_client.post(url, {"body": "hi", "client_id": "x" * 65}, headers=HTMX)

    assert response.status_code == 400
    assert "client_id" in response.content.decode()
    assert not Message.objects.exists()


def test_send_without_htmx_goes_back_to_the_room(alice_client, direct_chat):
    response = alice_client.post(reverse("chat:send", args=[direct_chat.pk]), {"body": "hi"})

    assert response["Location"] == reverse("chat:room", args=[direct_chat.pk])


def rendered_form_id(client, chat) -> str:
    room = client.get(reverse("chat:room", args=[chat.pk])).content.decode()
    return re.search(r'<input type="hidden" name="form_id" value="([0-9a-f]{32})">', room).group(1)


def test_a_form_submitted_twice_without_a_script_stores_its_message_once(alice_client, direct_chat):
    url, form_id = reverse("chat:send", args=[direct_chat.pk]), rendered_form_id(alice_client, direct_chat)

    first = alice_client.post(url, {"body": "see you at 5", "form_id": form_id})
    again = alice_client.post(url, {"body": "see you at 5", "form_id": form_id})

    assert first.status_code == again.status_code == 302
    assert list(Message.objects.values_list("body", flat=True)) == ["see you at 5"]


def test_a_form_used_again_for_other_text_stores_that_text_too(alice_client, direct_chat):
    url, form_id = reverse("chat:send", args=[direct_chat.pk]), rendered_form_id(alice_client, direct_chat)

    alice_client.post(url, {"body": "first", "form_id": form_id})
    alice_client.post(url, {"body": "second", "form_id": form_id})  # back to the old page, new text

    assert list(Message.objects.order_by("pk").values_list("body", flat=True)) == ["first", "second"]


def test_each_rendered_send_form_has_a_name_of_its_own(alice_client, direct_chat):
    assert rendered_form_id(alice_client, direct_chat) != rendered_form_id(alice_client, direct_chat)


def test_a_form_id_over_32_characters_is_a_400(alice_client, direct_chat):
    url = reverse("chat:send", args=[direct_chat.pk])
    response = alice_client.post(url, {"body": "hi", "form_id": "f" * 33}, headers=HTMX)

    assert response.status_code == 400
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("body", "error"), [("", "Write a message"), ("   \n\t", "Write a message"), ("x" * 11, "at most 10")]
)
def test_empty_or_too_long_messages_are_a_400_into_the_error_slot(alice_client, direct_chat, settings, body, error):
    settings.CHAT_MAX_MESSAGE_LENGTH = 10

    response = alice_client.post(reverse("chat:send", args=[direct_chat.pk]), {"body": body}, headers=HTMX)

    assert response.status_code == 400
    assert error in response.content.decode()
    assert response["HX-Retarget"] == f"#send-error-{direct_chat.pk}"
    assert response["HX-Reswap"] == "innerHTML"
    assert not Message.objects.exists()


def test_bubble_renders_without_a_request(direct_chat, bob):
    message = services.send_message(chat=direct_chat, sender=bob, body="from a socket")

    html = render_to_string("chat/partials/message_bubble.html", {"message": message, "sender_name": "Bob"})

    assert "from a socket" in html
    assert "bubble--mine" not in html
    assert f'data-sender-id="{bob.pk}"' in html


def test_a_bubble_shows_its_time_in_the_sites_zone_and_locale(alice_client, direct_chat, bob, settings):
    settings.TIME_ZONE = "Asia/Kolkata"  # +05:30: the message's local date is the next day
    message = services.send_message(chat=direct_chat, sender=bob, body="when?")
    Message.objects.filter(pk=message.pk).update(created_at=datetime(2026, 3, 1, 20, 0, tzinfo=UTC))

    for url, headers in [
        (reverse("chat:room", args=[direct_chat.pk]), {}),
        (reverse("chat:message", args=[direct_chat.pk, message.pk]), HTMX),
    ]:
        html = alice_client.get(url, headers=headers).content.decode()
        assert 'datetime="2026-03-02T01:30:00+05:30"' in html
        assert 'title="March 2, 2026, 1:30 a.m."' in html  # DATETIME_FORMAT in English
        assert ">01:30</time>" in html


# --- inbox paging --------------------------------------------------------------------


def test_inbox_pages_with_a_show_more_trigger(alice_client, alice, make_user, settings):
    settings.CHAT_INBOX_PAGE_SIZE = 3
    chats = [services.get_or_create_direct_chat(user=alice, other=make_user())[0] for _ in range(5)]

    first = alice_client.get(reverse("chat:list")).content.decode()
    more = alice_client.get(reverse("chat:list_partial"), {"offset": 3}, headers=HTMX).content.decode()

    newest_first = [str(chat.pk) for chat in reversed(chats)]
    assert re.findall(r'data-chat-row\s+data-chat-id="(\d+)"', first) == newest_first[:3]
    assert f'hx-get="{reverse("chat:list_partial")}?offset=3"' in first
    assert re.findall(r'data-chat-row\s+data-chat-id="(\d+)"', more) == newest_first[3:]
    assert "Show more" not in more


def test_a_live_refresh_keeps_the_rows_loaded_with_show_more(alice_client, alice, make_user, settings):
    settings.CHAT_INBOX_PAGE_SIZE = 3
    chats = [services.get_or_create_direct_chat(user=alice, other=make_user())[0] for _ in range(8)]
    newest_first = [str(chat.pk) for chat in reversed(chats)]

    refreshed = alice_client.get(reverse("chat:list_partial"), {"shown": 6}, headers=HTMX).content.decode()
    fewer = alice_client.get(reverse("chat:list_partial"), {"shown": 1}, headers=HTMX).content.decode()

    assert re.findall(r'data-chat-row\s+data-chat-id="(\d+)"', refreshed) == newest_first[:6]
    assert f'hx-get="{reverse("chat:list_partial")}?offset=6"' in refreshed
    assert re.findall(r'data-chat-row\s+data-chat-id="(\d+)"', fewer) == newest_first[:3]  # never under a page


def test_a_live_refresh_brings_back_at_most_ten_pages(alice_client, alice, make_user, settings):
    settings.CHAT_INBOX_PAGE_SIZE = 1
    for _ in range(12):
        services.get_or_create_direct_chat(user=alice, other=make_user())

    refreshed = alice_client.get(reverse("chat:list_partial"), {"shown": 12}, headers=HTMX).content.decode()

    assert len(re.findall(r"data-chat-row\s", refreshed)) == 10
    assert "Show more" in refreshed


def test_inbox_without_chats_shows_the_empty_state(alice_client):
    content = alice_client.get(reverse("chat:list")).content.decode()

    assert "No chats yet" in content
    assert 'data-refresh-url="/chat/list-partial/"' in content
    assert "<dialog" in content


def test_list_partial_is_the_list_fragment_only(alice_client, direct_chat):
    response = alice_client.get(reverse("chat:list_partial"), headers=HTMX)

    assert "<html" not in response.content.decode()
    assert f'data-chat-id="{direct_chat.pk}"' in response.content.decode()


# --- widget --------------------------------------------------------------------------


def test_widget_list_links_rooms_inside_the_panel(alice_client, direct_chat):
    response = alice_client.get(reverse("chat:widget"), headers=HTMX)

    content = response.content.decode()
    assert [t.name for t in response.templates][0] == "chat/partials/widget_response_list.html"
    assert f'hx-get="{reverse("chat:widget_room", args=[direct_chat.pk])}"' in content
    assert 'hx-target="#chat-widget-panel"' in content
    assert "?widget=1" in content


def test_widget_without_htmx_is_the_standalone_widget_page(alice_client, direct_chat):
    for url in (reverse("chat:widget"), reverse("chat:widget_room", args=[direct_chat.pk])):
        response = alice_client.get(url)

        assert [t.name for t in response.templates][0] == "chat/chat_widget.html"
        assert 'id="chat-widget-panel"' in response.content.decode()


def test_widget_room_uses_the_room_contract(alice_client, direct_chat):
    response = alice_client.get(reverse("chat:widget_room", args=[direct_chat.pk]), headers=HTMX)

    content = response.content.decode()
    assert [t.name for t in response.templates][0] == "chat/partials/widget_response_room.html"
    assert "data-chat-room" in content
    assert "data-message-form" in content
    assert f'hx-get="{reverse("chat:info", args=[direct_chat.pk])}"' in content


def test_info_inside_the_widget_is_the_widget_info_fragment(alice_client, group_chat):
    response = alice_client.get(reverse("chat:info", args=[group_chat.pk]), headers=WIDGET)

    assert [t.name for t in response.templates][0] == "chat/partials/widget_info.html"
    assert 'hx-target="#chat-widget-panel"' in response.content.decode()


def test_info_page_lists_members_and_the_actions_for_an_admin(alice_client, group_chat):
    content = alice_client.get(reverse("chat:info", args=[group_chat.pk])).content.decode()

    for name in ("Alice", "Bob", "Carol"):
        assert name in content
    for url_name in ("chat:edit", "chat:leave", "chat:delete", "chat:delete_group"):
        assert reverse(url_name, args=[group_chat.pk]) in content


def test_info_page_hides_admin_actions_from_members(client, bob, group_chat):
    client.force_login(bob)

    content = client.get(reverse("chat:info", args=[group_chat.pk])).content.decode()

    assert reverse("chat:delete_group", args=[group_chat.pk]) not in content
    assert reverse("chat:edit", args=[group_chat.pk]) not in content


# --- the context processor -----------------------------------------------------------


def test_context_processor_runs_no_query_until_a_template_uses_it(
    rf, alice, bob, direct_chat, django_assert_num_queries
):
    services.send_message(chat=direct_chat, sender=bob, body="hi")
    request = rf.get("/")
    request.user = alice

    with django_assert_num_queries(0):
        context = chat_widget(request)
    with django_assert_num_queries(1):
        assert str(context["chat_total_unread"]) == "1"
        assert context["chat_total_unread"] == 1  # computed once, then cached
    with django_assert_num_queries(2):
        assert [row.chat.pk for row in context["chat_widget_rows"]] == [direct_chat.pk]


def test_pages_that_do_not_show_chat_data_run_no_chat_query(alice_client, django_assert_max_num_queries):
    # The check-user fragment renders neither the badge nor the list: session, user, lookup.
    with django_assert_max_num_queries(3):
        alice_client.get(reverse("chat:check_user"), {"email": "x@example.com"}, headers=HTMX)


def test_a_bubbles_id_and_everything_pointing_at_it_are_written_without_thousand_separators(
    alice_client, direct_chat, alice, bob, settings
):
    # Ids past 999 in a project that groups digits: the bubble's id, the reactions form's URL
    # and target, a reply's link to its original and the edit form's target must all agree.
    settings.USE_THOUSAND_SEPARATOR = True
    original = Message.objects.create(id=1233, chat=direct_chat, sender=alice, body="first")
    reply = Message.objects.create(id=1234, chat=direct_chat, sender=bob, body="second", reply_to=original)
    services.toggle_reaction(message=reply, user=alice, emoji="👍")

    room = alice_client.get(reverse("chat:room", args=[direct_chat.pk])).content.decode()
    edit_form = alice_client.get(reverse("chat:edit_message", args=[direct_chat.pk, original.pk]), headers=HTMX)

    assert 'id="message-1234"' in room
    assert f'action="/chat/{direct_chat.pk}/messages/1234/react/"' in room
    assert 'hx-target="#message-1234"' in room
    assert 'href="#message-1233"' in room and 'data-reply-to="1233"' in room
    assert 'hx-target="#message-1233"' in edit_form.content.decode()
    assert "1,23" not in room + edit_form.content.decode()
