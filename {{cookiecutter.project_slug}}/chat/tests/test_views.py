"""Who may reach which chat route, and how bad requests are answered."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from chat import services
from chat.models import Chat, Membership, Message

HTMX = {"HX-Request": "true"}
XSS = "<img src=x onerror=alert(1)>"
XSS_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"

# (route name, takes the chat pk, method, POST data, status for anonymous, non-member, member, admin).
# The chat is `group_chat`: alice is its admin, bob and carol are members, dave is not in it.
ROUTES = [
    ("chat:list", False, "get", None, (302, 200, 200, 200)),
    ("chat:list_partial", False, "get", None, (302, 200, 200, 200)),
    ("chat:new", False, "get", None, (302, 200, 200, 200)),
    ("chat:new_group", False, "get", None, (302, 200, 200, 200)),
    ("chat:check_user", False, "get", None, (302, 200, 200, 200)),
    ("chat:widget", False, "get", None, (302, 200, 200, 200)),
    ("chat:widget_room", True, "get", None, (302, 404, 200, 200)),
    ("chat:room", True, "get", None, (302, 404, 200, 200)),
    ("chat:info", True, "get", None, (302, 404, 200, 200)),
    ("chat:messages", True, "get", None, (302, 404, 200, 200)),
    ("chat:edit", True, "get", None, (302, 404, 403, 200)),
    ("chat:send", True, "post", {"body": "hello"}, (302, 404, 302, 302)),
    ("chat:leave", True, "post", {}, (302, 404, 302, 302)),
    ("chat:delete", True, "post", {}, (302, 404, 302, 302)),
    ("chat:delete_group", True, "post", {}, (302, 404, 403, 302)),
]
ROLES = ["anonymous", "non_member", "member", "admin"]
CHAT_ROUTES = [route for route in ROUTES if route[1]]
POST_ROUTES = [route for route in ROUTES if route[2] == "post"]
GET_ROUTES = [route for route in ROUTES if route[2] == "get"]


def url_for(route, chat):
    name, takes_pk = route[0], route[1]
    return reverse(name, args=[chat.pk]) if takes_pk else reverse(name)


def call(client, route, chat, **extra):
    _name, _takes_pk, method, data, _statuses = route
    return getattr(client, method)(url_for(route, chat), data or {}, **extra)


@pytest.fixture
def login_as(client, alice, bob, dave):
    def login(role):
        user = {"non_member": dave, "member": bob, "admin": alice}.get(role)
        if user is not None:
            client.force_login(user)
        return client

    return login


@pytest.mark.parametrize("route", ROUTES, ids=[route[0] for route in ROUTES])
@pytest.mark.parametrize("role", ROLES)
def test_every_route_answers_each_role_with_the_expected_status(login_as, group_chat, route, role):
    response = call(login_as(role), route, group_chat)

    expected = route[4][ROLES.index(role)]
    assert response.status_code == expected
    if role == "anonymous":
        assert response["Location"].startswith(reverse("login") + "?next=")


@pytest.mark.parametrize("route", ROUTES, ids=[route[0] for route in ROUTES])
def test_anonymous_htmx_requests_get_a_client_redirect_to_login(client, group_chat, route):
    response = call(client, route, group_chat, headers={**HTMX, "HX-Current-URL": "http://testserver/somewhere/"})

    assert response.status_code == 401
    assert response["HX-Redirect"] == reverse("login") + "?next=/somewhere/"


@pytest.mark.parametrize("route", GET_ROUTES, ids=[route[0] for route in GET_ROUTES])
@pytest.mark.parametrize("headers", [{}, HTMX], ids=["page", "htmx"])
def test_pages_and_fragments_are_not_stored_by_the_browser(login_as, group_chat, route, headers):
    """Back must not bring a page (or a fragment htmx swapped in) back with old previews and badges."""
    response = call(login_as("admin"), route, group_chat, headers=headers)

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("route", CHAT_ROUTES, ids=[route[0] for route in CHAT_ROUTES])
def test_a_member_who_left_gets_404_on_every_chat_route(client, bob, group_chat, route):
    services.leave_group(chat=group_chat, user=bob)
    client.force_login(bob)

    assert call(client, route, group_chat).status_code == 404


@pytest.mark.parametrize("pk", [999_999, 10**30], ids=["unknown", "beyond-any-database-integer"])
@pytest.mark.parametrize("route", CHAT_ROUTES, ids=[route[0] for route in CHAT_ROUTES])
def test_an_unknown_chat_is_a_404_on_every_chat_route(alice_client, route, pk):
    missing = Chat(pk=pk)

    assert call(alice_client, route, missing).status_code == 404


@pytest.mark.parametrize("route", POST_ROUTES, ids=[route[0] for route in POST_ROUTES])
def test_post_only_routes_refuse_get_with_405(alice_client, group_chat, route):
    response = alice_client.get(url_for(route, group_chat))

    assert response.status_code == 405
    assert Chat.objects.filter(pk=group_chat.pk).exists()
    assert Membership.objects.filter(chat=group_chat).count() == 3


@pytest.mark.parametrize(
    "route",
    [route for route in GET_ROUTES if route[0] not in ("chat:new", "chat:new_group", "chat:edit")],
    ids=lambda route: route[0],
)
def test_read_only_routes_refuse_post_with_405(alice_client, group_chat, route):
    assert alice_client.post(url_for(route, group_chat)).status_code == 405


def test_member_sees_why_an_admin_only_action_is_forbidden(client, bob, group_chat):
    client.force_login(bob)

    response = client.post(reverse("chat:delete_group", args=[group_chat.pk]))

    assert response.status_code == 403
    assert "Only group admins" in response.content.decode()
    assert Chat.objects.filter(pk=group_chat.pk).exists()


def test_forbidden_htmx_request_gets_an_error_fragment_not_a_page(client, bob, group_chat):
    client.force_login(bob)

    response = client.post(reverse("chat:delete_group", args=[group_chat.pk]), headers=HTMX)

    assert response.status_code == 403
    assert "<html" not in response.content.decode()
    assert "Only group admins" in response.content.decode()


@pytest.mark.parametrize("url_name", ["chat:send", "chat:leave", "chat:delete", "chat:new"])
def test_posts_without_a_csrf_token_are_rejected(alice, group_chat, url_name):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    url = reverse(url_name) if url_name == "chat:new" else reverse(url_name, args=[group_chat.pk])

    response = client.post(url, {"body": "hi", "email": "bob@example.com"}, headers=HTMX)

    assert response.status_code == 403
    assert not Message.objects.exists()
    assert Membership.objects.filter(chat=group_chat).count() == 3


def test_htmx_send_with_the_csrf_header_from_the_page_is_accepted(alice, group_chat):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    page = client.get(reverse("chat:room", args=[group_chat.pk])).content.decode()
    token = re.search(r'"X-CSRFToken": "(\w+)"', page).group(1)  # what htmx sends, from body[hx-headers]

    response = client.post(
        reverse("chat:send", args=[group_chat.pk]), {"body": "hi"}, headers={**HTMX, "X-CSRFToken": token}
    )

    assert response.status_code == 200
    assert Message.objects.get().body == "hi"


@pytest.mark.parametrize(
    "query",
    ["before=abc", "after=abc", "before=-1", "after=1.5", "before=1&after=2", f"before={10**30}", "before=%20"],
)
def test_messages_with_malformed_paging_parameters_is_a_400(alice_client, group_chat, query):
    response = alice_client.get(reverse("chat:messages", args=[group_chat.pk]) + "?" + query, headers=HTMX)

    assert response.status_code == 400
    assert "error" in response.content.decode()


@pytest.mark.parametrize("query", ["offset=x", "offset=-3", f"offset={10**30}"])
def test_list_partial_with_a_malformed_offset_is_a_400(alice_client, query):
    response = alice_client.get(reverse("chat:list_partial") + "?" + query)

    assert response.status_code == 400


def test_unknown_edit_action_is_a_400(alice_client, group_chat):
    response = alice_client.post(reverse("chat:edit", args=[group_chat.pk]), {"action": "explode"})

    assert response.status_code == 400


@pytest.mark.parametrize("user_id", ["", "abc", "999999"])
def test_removing_someone_who_is_not_a_member_is_a_400(alice_client, group_chat, user_id):
    response = alice_client.post(reverse("chat:edit", args=[group_chat.pk]), {"action": "remove", "user_id": user_id})

    assert response.status_code == 400
    assert Membership.objects.filter(chat=group_chat).count() == 3


def test_leaving_a_direct_chat_is_a_400_not_a_crash(alice_client, direct_chat):
    response = alice_client.post(reverse("chat:leave", args=[direct_chat.pk]))

    assert response.status_code == 400
    assert Membership.objects.filter(chat=direct_chat).count() == 2


def test_editing_a_direct_chat_is_forbidden(alice_client, direct_chat):
    assert alice_client.get(reverse("chat:edit", args=[direct_chat.pk])).status_code == 403


@pytest.mark.parametrize(
    ("url_name", "htmx"),
    [
        ("chat:list", False),
        ("chat:list_partial", False),
        ("chat:widget", True),
        ("chat:widget", False),
        ("chat:room", False),
        ("chat:widget_room", True),
    ],
)
def test_message_bodies_are_escaped_everywhere_they_show(client, alice, bob, direct_chat, url_name, htmx):
    services.send_message(chat=direct_chat, sender=bob, body=XSS)
    client.force_login(alice)
    url = reverse(url_name, args=[direct_chat.pk]) if url_name.endswith("room") else reverse(url_name)

    content = client.get(url, headers=HTMX if htmx else {}).content.decode()

    assert XSS_ESCAPED in content
    assert XSS not in content


def test_the_bubble_returned_after_send_is_escaped(alice_client, direct_chat):
    response = alice_client.post(reverse("chat:send", args=[direct_chat.pk]), {"body": XSS}, headers=HTMX)

    assert XSS_ESCAPED in response.content.decode()
    assert XSS not in response.content.decode()


def test_group_names_are_escaped_in_the_list(alice_client, alice, bob):
    services.create_group_chat(creator=alice, name="<b>bold</b>", members=[bob])

    content = alice_client.get(reverse("chat:list")).content.decode()

    assert "&lt;b&gt;bold&lt;/b&gt;" in content
    assert "<b>bold</b>" not in content


def test_messages_between_two_ids_fill_a_gap(alice_client, group_chat, alice):
    sent = [services.send_message(chat=group_chat, sender=alice, body=f"m{i}") for i in range(5)]
    url = reverse("chat:messages", args=[group_chat.pk])

    response = alice_client.get(url, {"after": sent[0].pk, "before": sent[4].pk}, headers={"HX-Request": "true"})

    shown = [int(found) for found in re.findall(r'data-message-id="(\d+)"', response.content.decode())]
    assert shown == [sent[1].pk, sent[2].pk, sent[3].pk]
