"""Edit, delete for everyone, reactions and reports: the services, their routes, and the
change cursor that lets a room catch up on what it missed."""

import json
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from chat import events, selectors, services
from chat.models import Chat, Membership, Message, Reaction, Report

HTMX = {"HX-Request": "true"}
THUMBS = "👍"


@pytest.fixture
def bob_says(group_chat, bob):
    return services.send_message(chat=group_chat, sender=bob, body="original words")


@pytest.fixture
def frames(monkeypatch) -> list[dict]:
    """The room frames the services send, decoded, instead of through the channel layer."""
    sent = []
    monkeypatch.setattr(events, "send", lambda group, event: sent.append(json.loads(event["text"])))
    return sent


def logged_in(user, **options) -> Client:
    client = Client(**options)
    client.force_login(user)
    return client


@pytest.fixture
def bob_client(bob):
    return logged_in(bob)


def message_url(name, message, chat_id=None):
    return reverse(f"chat:{name}", args=[chat_id or message.chat_id, message.pk])


def refreshed(message) -> Message:
    return Message.objects.get(pk=message.pk)


def chat_cursor(message) -> int:
    return Chat.objects.get(pk=message.chat_id).change_seq


def unread(chat, user) -> int:
    return Membership.objects.get(chat=chat, user=user).unread_count


# --- edit ------------------------------------------------------------------------------


def test_editing_changes_the_text_marks_it_edited_and_takes_the_next_change_cursor(bob_says, bob):
    services.edit_message(message=bob_says, user=bob, body="  better words  ")

    message = refreshed(bob_says)
    assert (message.body, message.edited_at is not None, message.change_seq) == ("better words", True, 1)
    assert Chat.objects.get(pk=message.chat_id).change_seq == 1


def test_editing_to_the_same_text_changes_nothing(bob_says, bob):
    services.edit_message(message=bob_says, user=bob, body="original words")
    assert (refreshed(bob_says).edited_at, refreshed(bob_says).change_seq) == (None, 0)


@pytest.mark.parametrize("editor", ["alice", "carol"])  # the group's admin, another member
def test_nobody_edits_someone_elses_message(bob_says, editor, request):
    with pytest.raises(PermissionDenied):
        services.edit_message(message=bob_says, user=request.getfixturevalue(editor), body="mine now")
    assert refreshed(bob_says).body == "original words"


def test_the_edit_window_closes(bob_says, bob, settings):
    Message.objects.filter(pk=bob_says.pk).update(created_at=timezone.now() - timedelta(seconds=901))
    with pytest.raises(PermissionDenied, match="15 minutes"):
        services.edit_message(message=refreshed(bob_says), user=bob, body="too late")

    settings.CHAT_EDIT_WINDOW_SECONDS = 0  # always
    services.edit_message(message=refreshed(bob_says), user=bob, body="never too late")
    assert refreshed(bob_says).body == "never too late"


@pytest.mark.parametrize("body", ["", "   ", "x" * 4001, "nul\x00"])
def test_an_edit_is_checked_like_a_new_message(bob_says, bob, body):
    with pytest.raises(ValidationError):
        services.edit_message(message=bob_says, user=bob, body=body)


def test_a_former_member_cannot_edit(bob_says, bob, group_chat):
    services.leave_group(chat=group_chat, user=bob)
    with pytest.raises(Membership.DoesNotExist):
        services.edit_message(message=bob_says, user=bob, body="after leaving")


def test_editing_the_last_message_refreshes_the_inbox_preview(bob_says, bob, alice_client, group_chat):
    services.edit_message(message=bob_says, user=bob, body="the new preview")
    html = alice_client.get(reverse("chat:list")).content.decode()
    assert "the new preview" in html and "original words" not in html


# --- delete for everyone --------------------------------------------------------------------


def test_deleting_blanks_the_body_keeps_a_placeholder_and_drops_reactions(bob_says, bob, alice):
    services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS)
    services.delete_message(message=bob_says, actor=bob)

    message = refreshed(bob_says)
    assert (message.body, message.deleted_at is not None, message.change_seq) == ("", True, 2)
    assert not Reaction.objects.filter(message=message).exists()


def test_a_group_admin_deletes_anyones_message_and_a_member_only_their_own(bob_says, alice, carol):
    with pytest.raises(PermissionDenied):
        services.delete_message(message=bob_says, actor=carol)
    services.delete_message(message=bob_says, actor=alice)
    assert refreshed(bob_says).deleted_at is not None


def test_in_a_direct_chat_only_the_sender_deletes(direct_chat, alice, bob):
    message = services.send_message(chat=direct_chat, sender=bob, body="mine")
    with pytest.raises(PermissionDenied):
        services.delete_message(message=message, actor=alice)


def test_deleting_an_unread_message_takes_it_off_the_unread_counts(group_chat, alice, bob, carol):
    services.send_message(chat=group_chat, sender=bob, body="one")
    second = services.send_message(chat=group_chat, sender=bob, body="two")
    services.mark_read(chat=group_chat, user=carol)
    assert (unread(group_chat, alice), unread(group_chat, carol)) == (2, 0)

    services.delete_message(message=second, actor=bob)

    assert (unread(group_chat, alice), unread(group_chat, carol), unread(group_chat, bob)) == (1, 0, 0)
    # A recount agrees: a deleted message is nothing to read.
    services.mark_read(chat=group_chat, user=alice, up_to_id=0)
    assert unread(group_chat, alice) == 1


def test_deleting_the_last_message_shows_it_deleted_in_the_inbox(bob_says, bob, alice_client):
    services.delete_message(message=bob_says, actor=bob)
    html = alice_client.get(reverse("chat:list")).content.decode()
    assert "message deleted" in html and "original words" not in html


def test_deleting_twice_changes_nothing_more(bob_says, bob):
    services.delete_message(message=bob_says, actor=bob)
    services.delete_message(message=bob_says, actor=bob)
    assert refreshed(bob_says).change_seq == 1


def test_a_deleted_message_cannot_be_edited_reacted_to_or_reported(bob_says, bob, alice):
    services.delete_message(message=bob_says, actor=bob)
    for change in (
        lambda: services.edit_message(message=bob_says, user=bob, body="back"),
        lambda: services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS),
        lambda: services.report_message(message=refreshed(bob_says), reporter=alice, reason="spam"),
    ):
        with pytest.raises(ValidationError):
            change()
    assert chat_cursor(bob_says) == 1  # the delete's: the refused changes took none


def test_staff_delete_from_the_admin_needs_staff_rights(bob_says, make_user):
    member_of_nothing = make_user()
    with pytest.raises(PermissionDenied):
        services.delete_message(message=bob_says, actor=member_of_nothing, as_staff=True)
    staff = make_user(is_staff=True, is_superuser=True)
    services.delete_message(message=bob_says, actor=staff, as_staff=True)
    assert refreshed(bob_says).deleted_at is not None


# --- reactions ---------------------------------------------------------------------------


def test_reactions_toggle_per_person_and_count_per_emoji(bob_says, alice, carol):
    services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS)
    services.toggle_reaction(message=bob_says, user=carol, emoji=THUMBS)
    services.toggle_reaction(message=bob_says, user=carol, emoji="🎉")
    services.toggle_reaction(message=bob_says, user=carol, emoji="🎉")  # taken back

    [counts] = [m.reaction_counts for m in selectors.with_reactions([refreshed(bob_says)])]
    assert [(c.emoji, c.count, c.who) for c in counts] == [(THUMBS, 2, "Alice, Carol")]
    assert refreshed(bob_says).change_seq == 4


def test_a_former_member_cannot_react(bob_says, alice, group_chat):
    services.leave_group(chat=group_chat, user=alice)
    with pytest.raises(Membership.DoesNotExist):  # found out under the chat's lock: nothing kept
        services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS)
    assert not Reaction.objects.exists()
    assert refreshed(bob_says).change_seq == chat_cursor(bob_says) == 0


def test_a_reaction_to_a_message_whose_chat_is_gone_keeps_nothing(bob_says, alice, group_chat):
    Chat.objects.filter(pk=group_chat.pk).delete()
    with pytest.raises(Membership.DoesNotExist):
        services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS)
    assert not Reaction.objects.exists()


@pytest.mark.parametrize("rows_returned", [True, False], ids=["rows returned", "read after"])
def test_a_reaction_holds_its_chats_lock_for_as_few_statements_as_it_can(bob_says, alice, rows_returned, monkeypatch):
    """Every send and change of the chat, on every server process, waits for that lock. Before
    it, one statement inserts the reaction unless the person has it already. The lock is
    taken by the statement taking the chat's next change cursor, and under it only the
    message is stamped with that cursor (if not deleted and the reactor a member). One taken
    back is deleted under it, as a deleted message's reactions are. Where the database returns
    no rows from writes (SQLite before 3.35), the cursor and the stamped message are read
    after their UPDATEs, and the insert is tried in a savepoint."""
    if rows_returned and not services.returns_rows_from_writes():
        pytest.skip("this database returns no rows from writes")
    monkeypatch.setattr(services, "returns_rows_from_writes", lambda: rows_returned)
    # The cursor's UPDATE and the message's stamp each return their row, or are read after.
    update = ["UPDATE"] if rows_returned else ["UPDATE", "SELECT"]
    for toggle, before, under in [
        ("added", ["INSERT"], [*update, *update]),
        ("taken back", ["INSERT"], [*update, "DELETE", *update]),
    ]:
        with CaptureQueriesContext(connection) as queries:
            services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS)
        savepoints = ("SAVEPOINT", "RELEASE", "ROLLBACK")  # the fallback's, around its insert
        statements = [q["sql"] for q in queries.captured_queries if q["sql"].split()[0] not in savepoints]
        lock = next(i for i, sql in enumerate(statements) if '"chat_chat"' in sql)
        assert [sql.split()[0] for sql in statements[:lock]] == before, toggle
        assert [sql.split()[0] for sql in statements[lock:]] == under, toggle
        assert Reaction.objects.filter(user=alice).exists() == (toggle == "added")
    services.edit_message(message=bob_says, user=bob_says.sender, body="and edited")
    assert refreshed(bob_says).change_seq == chat_cursor(bob_says) == 3


def test_a_reaction_with_its_intent_ends_as_meant_however_often_it_is_sent(bob_says, alice, carol):
    services.toggle_reaction(message=bob_says, user=carol, emoji=THUMBS)  # someone else's stays
    for on in (True, True):
        services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS, on=on)
    assert Reaction.objects.filter(user=alice).count() == 1
    assert chat_cursor(bob_says) == 2  # the second took no cursor
    for on in (False, False):
        services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS, on=on)
    assert not Reaction.objects.filter(user=alice).exists() and Reaction.objects.filter(user=carol).exists()
    assert refreshed(bob_says).change_seq == chat_cursor(bob_says) == 3


def test_the_react_route_takes_the_same_intent(bob_says, alice):
    client = logged_in(alice)
    for on in ("true", "true"):
        assert client.post(message_url("react", bob_says), {"emoji": THUMBS, "on": on}, headers=HTMX).status_code == 200
    assert Reaction.objects.filter(user=alice).count() == 1
    refused = client.post(message_url("react", bob_says), {"emoji": THUMBS, "on": "maybe"}, headers=HTMX)
    assert refused.status_code == 400 and "on must be true or false" in refused.content.decode()
    client.post(message_url("react", bob_says), {"emoji": THUMBS, "on": "false"}, headers=HTMX)
    assert not Reaction.objects.exists()


def test_a_reaction_taken_back_from_two_tabs_at_once_stays_taken_back(bob_says, alice, monkeypatch):
    """Both tabs showed it, both take it back: the second finds it gone when its turn at the
    chat's lock comes, and leaves it gone instead of adding it again."""
    services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS)
    take_change_cursor = services.take_change_cursor

    def the_other_tab_first(chat_id):
        Reaction.objects.filter(message=bob_says, user=alice).delete()  # its commit, just before this lock
        return take_change_cursor(chat_id)

    monkeypatch.setattr(services, "take_change_cursor", the_other_tab_first)
    services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS)
    assert not Reaction.objects.exists()
    assert refreshed(bob_says).change_seq == chat_cursor(bob_says) == 2


def test_a_reaction_to_a_message_deleted_outright_meanwhile_is_refused_as_deleted(bob_says, alice):
    """Deleted from the admin after the reactor read it: they are still a member."""
    services.delete_messages(message_ids=[bob_says.pk])
    with pytest.raises(ValidationError, match="deleted"):
        services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS)
    assert not Reaction.objects.exists()


def test_a_reaction_to_a_reply_whose_original_was_deleted_outright_shows_the_original_deleted(
    group_chat, alice, bob, bob_says, frames, django_capture_on_commit_callbacks
):
    """One bubble alone (the room's frame, the react route's answer) looks its original up."""
    reply = services.send_message(chat=group_chat, sender=alice, body="an answer", reply_to_id=bob_says.pk)
    services.delete_messages(message_ids=[bob_says.pk])

    with django_capture_on_commit_callbacks(execute=True):
        response = logged_in(bob).post(message_url("react", reply), {"emoji": THUMBS}, headers=HTMX)

    assert response.status_code == 200
    [frame] = frames
    for html in (response.content.decode(), frame["html"]):
        assert "Message deleted" in html and "an answer" in html


@pytest.mark.parametrize("rows_returned", [True, False], ids=["rows returned", "read after"])
def test_a_reactions_frame_shows_the_message_as_its_change_stored_it_without_reading_it_again(
    bob_says, alice, bob, rows_returned, monkeypatch, frames, django_capture_on_commit_callbacks
):
    """The reactor's read of the message can be older than an edit that took the chat's
    lock first. The message returned and the room's frame show the text as stored under the
    reaction's cursor; after the commit the frame reads only the reactions."""
    if rows_returned and not services.returns_rows_from_writes():
        pytest.skip("this database returns no rows from writes")
    monkeypatch.setattr(services, "returns_rows_from_writes", lambda: rows_returned)
    read_before_the_edit = Message.objects.select_related("sender").get(pk=bob_says.pk)
    services.edit_message(message=bob_says, user=bob, body="edited words")

    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        reacted = services.toggle_reaction(message=read_before_the_edit, user=alice, emoji=THUMBS)

    assert (reacted.body, reacted.edited_at is not None, reacted.change_seq) == ("edited words", True, 2)
    [frame] = frames
    assert (frame["type"], frame["message_id"], frame["change_seq"]) == ("chat.reacted", bob_says.pk, 2)
    assert "edited words" in frame["html"] and "bubble-edited" in frame["html"]
    assert f'data-reactor-ids="{alice.pk}"' in frame["html"] and "Bob" in frame["html"]
    statements = [q["sql"] for q in queries.captured_queries]
    committed = max(i for i, sql in enumerate(statements) if sql.startswith("RELEASE SAVEPOINT"))
    [frames_read] = statements[committed + 1 :]
    assert frames_read.startswith("SELECT") and '"chat_reaction"' in frames_read.split(" WHERE ")[0]


@pytest.mark.parametrize("emoji", ["🦄", "", None, 7, THUMBS * 2])
def test_only_the_configured_emoji_are_reactions(bob_says, alice, emoji):
    with pytest.raises(ValidationError):
        services.toggle_reaction(message=bob_says, user=alice, emoji=emoji)


def test_the_reaction_set_is_configurable(bob_says, alice, settings):
    settings.CHAT_REACTIONS = ["🦄"]
    services.toggle_reaction(message=bob_says, user=alice, emoji="🦄")
    with pytest.raises(ValidationError):
        services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS)


# --- reports -------------------------------------------------------------------------------


def test_a_report_keeps_the_text_it_was_about(bob_says, alice, bob):
    report = services.report_message(message=bob_says, reporter=alice, reason="abuse", details=" rude ")
    services.edit_message(message=bob_says, user=bob, body="all nice now")
    report.refresh_from_db()
    assert (report.reason, report.details, report.reported_body) == ("abuse", "rude", "original words")


@pytest.mark.parametrize(
    ("reporter", "reason", "problem"),
    [("bob", "spam", "your own"), ("alice", "nonsense", "reason"), ("alice", "", "reason")],
)
def test_reports_are_refused_for_own_messages_and_unknown_reasons(bob_says, reporter, reason, problem, request):
    with pytest.raises(ValidationError, match=problem):
        services.report_message(message=bob_says, reporter=request.getfixturevalue(reporter), reason=reason)


def test_one_report_per_person_and_message(bob_says, alice):
    services.report_message(message=bob_says, reporter=alice, reason="spam")
    with pytest.raises(ValidationError, match="already"):
        services.report_message(message=bob_says, reporter=alice, reason="other")


# --- the change cursor -----------------------------------------------------------------------


def test_changed_since_returns_each_changed_message_once_in_change_order(group_chat, alice, bob):
    first = services.send_message(chat=group_chat, sender=bob, body="first")
    second = services.send_message(chat=group_chat, sender=bob, body="second")
    services.toggle_reaction(message=first, user=alice, emoji=THUMBS)  # 1
    services.edit_message(message=second, user=bob, body="second, edited")  # 2
    services.delete_message(message=first, actor=bob)  # 3
    membership = Membership.objects.get(chat=group_chat, user=alice)

    page = selectors.messages_changed_since(membership=membership, since=0)
    assert [(m.pk, m.change_seq) for m in page.messages] == [(second.pk, 2), (first.pk, 3)]
    assert selectors.messages_changed_since(membership=membership, since=2).messages[0].deleted_at
    assert selectors.messages_changed_since(membership=membership, since=3).messages == []


def test_changed_since_pages_and_skips_history_deleted_for_me(group_chat, alice, bob):
    messages = [services.send_message(chat=group_chat, sender=bob, body=f"m{n}") for n in range(3)]
    for message in messages:
        services.toggle_reaction(message=message, user=alice, emoji=THUMBS)
    membership = Membership.objects.get(chat=group_chat, user=alice)
    page = selectors.messages_changed_since(membership=membership, since=0, limit=2)
    assert (len(page.messages), page.has_more, page.cursor) == (2, True, 2)

    Membership.objects.filter(pk=membership.pk).update(cleared_message_id=messages[1].pk)
    membership.refresh_from_db()
    assert [m.pk for m in selectors.messages_changed_since(membership=membership, since=0).messages] == [messages[2].pk]


def test_the_changed_since_route_renders_the_current_bubbles(bob_says, bob, alice_client):
    services.edit_message(message=bob_says, user=bob, body="edited text")
    url = reverse("chat:messages", args=[bob_says.chat_id]) + "?changed_since=0"
    html = alice_client.get(url, headers=HTMX).content.decode()
    assert 'data-has-more="false"' in html and "edited text" in html and 'data-change-seq="1"' in html
    assert alice_client.get(url.replace("=0", "=x")).status_code == 400


def test_the_room_page_carries_the_chats_change_cursor(bob_says, alice, bob, alice_client):
    services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS)
    html = alice_client.get(reverse("chat:room", args=[bob_says.chat_id])).content.decode()
    assert 'data-change-seq="1"' in html  # the room's cursor and the bubble's
    assert 'aria-pressed="true"' in html  # alice's own reaction, marked for her


# --- the routes: authorization matrix and bad input --------------------------------------


ROUTES = [
    ("edit_message", {"body": "changed"}),
    ("delete_message", {}),
    ("react", {"emoji": THUMBS}),
    ("report_message", {"reason": "spam"}),
]


@pytest.mark.parametrize(("name", "data"), ROUTES)
def test_a_stranger_gets_404_for_every_message_route(client, make_user, bob_says, name, data):
    client.force_login(make_user())
    assert client.post(message_url(name, bob_says), data).status_code == 404
    assert refreshed(bob_says).change_seq == 0 and not Report.objects.exists()


@pytest.mark.parametrize(("name", "data"), ROUTES)
def test_another_chats_message_id_is_a_404(alice_client, alice, bob, bob_says, name, data):
    other_chat = services.get_or_create_direct_chat(user=alice, other=bob)[0]
    assert alice_client.post(message_url(name, bob_says, chat_id=other_chat.pk), data).status_code == 404
    assert refreshed(bob_says).change_seq == 0


@pytest.mark.parametrize("name", ["edit_message", "delete_message", "react", "report_message"])
def test_every_message_route_needs_csrf(bob_says, bob, name):
    client = logged_in(bob, enforce_csrf_checks=True)
    assert client.post(message_url(name, bob_says), {"emoji": THUMBS}).status_code == 403


@pytest.mark.parametrize(
    ("user", "name", "data", "status"),
    [
        ("carol", "edit_message", {"body": "not mine"}, 403),
        ("carol", "delete_message", {}, 403),
        ("alice", "edit_message", {"body": "admin, still not mine"}, 403),
        ("alice", "delete_message", {}, 200),  # a group admin
        ("bob", "edit_message", {"body": ""}, 400),
        ("alice", "react", {"emoji": "🦄"}, 400),
        ("bob", "report_message", {"reason": "spam"}, 400),
        ("carol", "report_message", {"reason": "bogus"}, 400),
    ],
)
def test_what_each_role_may_do_over_htmx(client, bob_says, user, name, data, status, request):
    client.force_login(request.getfixturevalue(user))
    response = client.post(message_url(name, bob_says), data, headers=HTMX)
    assert response.status_code == status
    if name != "report_message":  # a refusal comes back as the bubble with the reason in it
        assert f'id="message-{bob_says.pk}"' in response.content.decode()


def test_the_answer_to_an_edit_keeps_the_messages_reactions(bob_client, bob_says, alice):
    services.toggle_reaction(message=bob_says, user=alice, emoji=THUMBS)
    saved = bob_client.post(message_url("edit_message", bob_says), {"body": "edited"}, headers=HTMX)
    assert f'data-reactor-ids="{alice.pk}"' in saved.content.decode()


def test_an_expired_edit_window_is_a_403_over_http(bob_client, bob_says):
    Message.objects.filter(pk=bob_says.pk).update(created_at=timezone.now() - timedelta(hours=1))
    assert bob_client.get(message_url("edit_message", bob_says), headers=HTMX).status_code == 403
    response = bob_client.post(message_url("edit_message", bob_says), {"body": "late"}, headers=HTMX)
    assert response.status_code == 403
    assert "can be edited for 15 minutes" in response.content.decode()


def test_inline_edit_round_trip_over_htmx(bob_client, bob_says):
    form = bob_client.get(message_url("edit_message", bob_says), headers=HTMX).content.decode()
    assert "data-edit-input" in form and "original words" in form

    saved = bob_client.post(message_url("edit_message", bob_says), {"body": "new words"}, headers=HTMX)
    html = saved.content.decode()
    assert saved.status_code == 200 and "new words" in html and "bubble-edited" in html
    assert "data-edit-input" not in html
    cancel = bob_client.get(message_url("message", bob_says), headers=HTMX).content.decode()
    assert "new words" in cancel


def test_without_javascript_each_action_is_a_page_and_a_redirect(bob_client, bob_says, alice):
    alice_client = logged_in(alice)
    room = reverse("chat:room", args=[bob_says.chat_id]) + f"#message-{bob_says.pk}"
    assert "<html" in bob_client.get(message_url("edit_message", bob_says)).content.decode()
    assert bob_client.post(message_url("edit_message", bob_says), {"body": "no js"}).url == room
    assert bob_client.post(message_url("react", bob_says), {"emoji": THUMBS}).url == room
    assert "<html" in alice_client.get(message_url("report_message", bob_says)).content.decode()
    assert alice_client.post(message_url("report_message", bob_says), {"reason": "spam"}).url == room
    confirm = bob_client.get(message_url("delete_message", bob_says)).content.decode()
    assert "Delete this message for everyone?" in confirm
    assert bob_client.post(message_url("delete_message", bob_says)).url == room
    message = refreshed(bob_says)
    assert (message.body, Reaction.objects.count(), Report.objects.count()) == ("", 0, 1)


@pytest.mark.parametrize(
    ("user", "shown", "hidden"),
    [
        ("bob", ["React with", ">Edit<", "Delete for everyone"], [">Report<"]),
        ("alice", ["React with", "Delete for everyone", ">Report<"], [">Edit<"]),  # a group admin
        ("carol", ["React with", ">Report<"], [">Edit<", "Delete for everyone"]),
    ],
)
def test_without_javascript_a_messages_page_offers_what_the_viewer_may_do(bob_says, user, shown, hidden, request):
    html = logged_in(request.getfixturevalue(user)).get(message_url("message", bob_says)).content.decode()
    assert "<html" in html and "original words" in html
    assert all(text in html for text in shown) and not any(text in html for text in hidden)


def test_a_room_renders_one_menu_and_a_button_per_message(alice_client, bob_says, group_chat):
    html = alice_client.get(reverse("chat:room", args=[group_chat.pk])).content.decode()
    assert html.count("data-message-menu-template") == 1 and html.count("React with 👍") == 1
    assert html.count("data-message-actions") == 1  # bob's one message


def test_the_edit_rate_limit_answers_429_with_retry_after(bob_client, bob_says, settings):
    settings.CHAT_RATE_LIMITS = {"edit": "1/m"}
    assert bob_client.post(message_url("edit_message", bob_says), {"body": "one"}, headers=HTMX).status_code == 200
    limited = bob_client.post(message_url("edit_message", bob_says), {"body": "two"}, headers=HTMX)
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    assert refreshed(bob_says).body == "one"


@pytest.mark.parametrize(("action", "rate"), [("react", {"react": "1/m"}), ("report", {"report": "1/m"})])
def test_react_and_report_have_their_own_rate_limits(client, group_chat, bob, carol, alice, settings, action, rate):
    settings.CHAT_RATE_LIMITS = rate
    client.force_login(alice)
    first, second = (services.send_message(chat=group_chat, sender=bob, body=b) for b in ("a", "b"))
    name, data = ("react", {"emoji": THUMBS}) if action == "react" else ("report_message", {"reason": "spam"})
    assert client.post(message_url(name, first), data, headers=HTMX).status_code == 200
    assert client.post(message_url(name, second), data, headers=HTMX).status_code == 429


# --- reports in the admin ------------------------------------------------------------------


def test_a_report_shows_in_the_admin_with_the_messages_around_it(admin_client, group_chat, alice, bob, carol):
    before = services.send_message(chat=group_chat, sender=carol, body="what came before")
    reported = services.send_message(chat=group_chat, sender=bob, body="the rude one")
    services.send_message(chat=group_chat, sender=alice, body="what came after")
    report = services.report_message(message=reported, reporter=alice, reason="abuse", details="not ok")

    listing = admin_client.get(reverse("admin:chat_report_changelist")).content.decode()
    assert "the rude one" in listing and "Harassment or abuse" in listing
    page = admin_client.get(reverse("admin:chat_report_change", args=[report.pk])).content.decode()
    assert page.index(before.body) < page.index("the rude one") < page.index("what came after")
    assert "◀ reported" in page and "not ok" in page


def test_staff_delete_a_reported_message_for_everyone_from_the_admin(admin_client, group_chat, alice, bob):
    reported = services.send_message(chat=group_chat, sender=bob, body="the rude one")
    report = services.report_message(message=reported, reporter=alice, reason="abuse")

    response = admin_client.post(
        reverse("admin:chat_report_changelist"),
        {"action": "delete_messages_for_everyone", "_selected_action": [report.pk]},
    )

    assert response.status_code == 302
    message, report = refreshed(reported), Report.objects.get(pk=report.pk)
    assert (message.body, message.deleted_at is not None, report.resolved_at is not None) == ("", True, True)
    assert report.reported_body == "the rude one"  # what the staff were told stays with the report


def test_staff_without_the_right_to_change_messages_cannot_delete_them(client, make_user, group_chat, alice, bob):
    from django.contrib.auth.models import Permission

    reported = services.send_message(chat=group_chat, sender=bob, body="the rude one")
    report = services.report_message(message=reported, reporter=alice, reason="spam")
    viewer = make_user(is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_report", "change_report"]))
    client.force_login(viewer)

    client.post(
        reverse("admin:chat_report_changelist"),
        {"action": "delete_messages_for_everyone", "_selected_action": [report.pk]},
    )

    assert refreshed(reported).body == "the rude one"
    assert Report.objects.get(pk=report.pk).resolved_at is None
