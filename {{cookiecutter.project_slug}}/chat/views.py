"""Chat pages and HTMX fragments.

Thin by design: each view parses its input, calls a service (writes) or a selector
(reads), and renders a page or the partial that HTMX swaps. `chat_view` adds what every
route needs: login, allowed methods, a cap on the request body, turning bad input into
400, forbidden actions into 403 and limits into 429 or 503 instead of a 500, and
`Cache-Control: no-store` (see `chat_view`).
"""

from __future__ import annotations

from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import BadRequest, PermissionDenied, ValidationError
from django.db import OperationalError
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django.utils.http import escape_leading_slashes
from django.utils.log import log_response
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from chat import metrics, selectors, services
from chat.conf import chat_setting
from chat.forms import (
    AddMemberForm,
    CheckUserForm,
    EditMessageForm,
    MessageForm,
    MuteForm,
    NewChatForm,
    NewGroupForm,
    PersonForm,
    RemoveMemberForm,
    RenameGroupForm,
    ReportForm,
)
from chat.models import Membership, Message, whole_number
from chat.ratelimit import RateLimited, RateLimitUnavailable, check_rate
from chat.realtime.database import database_busy, one_line
from chat.realtime.sends import Busy, Send, refusing_sends, store_from_a_request

DATABASE_RETRY_AFTER_SECONDS = 1
# What a send or a page refused for now (past capacity, the database busy) says; the page retries.
SERVER_BUSY = "The server is busy. Try again in a moment."

WIDGET_PANEL_ID = "chat-widget-panel"


# --- plumbing shared by every view ---------------------------------------------------


def chat_view(*methods: str):
    """Login required, only `methods`, and bad input or forbidden actions answered cleanly.

    Anonymous HTMX requests get a 401 with `HX-Redirect` to the login page, so htmx
    navigates instead of swapping a login form into a fragment. Every answer is marked
    no-store: a chat page is one person's live state, and one the browser kept would come
    back on Back with old previews and badges.
    """

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                if not request.user.is_authenticated:  # the session's read: the first use of the database
                    return login_redirect(request)
                if request.method not in methods and not (request.method == "HEAD" and "GET" in methods):
                    return method_not_allowed(request, methods)
                if body_too_large(request):
                    return error_response(request, "That request is too large.", status=413)
                response = view(request, *args, **kwargs)
            except (Http404, Membership.DoesNotExist):  # the latter: left or removed mid-request
                response = no_longer_member(request, kwargs.get("pk"))
            except (BadRequest, ValidationError) as exc:
                response = error_response(request, error_text(exc), status=400)
            except PermissionDenied as exc:
                response = error_response(request, str(exc) or "You are not allowed to do this.", status=403)
            except (RateLimited, RateLimitUnavailable) as exc:
                status = 429 if isinstance(exc, RateLimited) else 503
                response = error_response(request, str(exc), status=status)
                response["Retry-After"] = str(exc.retry_after)
            except OperationalError as exc:
                if not database_busy(exc):  # a missing table, a wrong password: a 500, which monitoring sees
                    raise
                response = database_unavailable(request, exc)
            patch_vary_headers(response, ["HX-Request", "HX-Target"])
            add_never_cache_headers(response)
            return response

        return wrapper

    return decorator


def database_unavailable(request, exc: OperationalError) -> HttpResponse:
    """503 with Retry-After, which the page retries: nothing was saved. The database is busy
    (SQLite's one writer; every pooled connection in use past the pool's timeout, as under a
    restart's reconnects) or restarting. The answer reads nothing more from it (a full page
    would read the person for its header), and is logged as a warning on one line: expected
    under overload, and a traceback per request would cost the busy process more."""
    if request.htmx:
        content = render_to_string("chat/partials/error.html", {"error": SERVER_BUSY})
    else:  # a link to try again: this page, or the chat list after a form's POST
        this_page = escape_leading_slashes(request.get_full_path())
        again = this_page if request.method in ("GET", "HEAD") else reverse("chat:list")
        content = render_to_string("chat/unavailable.html", {"error": SERVER_BUSY, "again": again})
    response = HttpResponse(content, status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    log_response(
        "Database unavailable: %s (%s)",
        request.path,
        one_line(exc),
        response=response,
        request=request,
        level="warning",
    )
    return response


def body_too_large(request) -> bool:
    """Bigger than any chat form can be: refused before anything parses it."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False  # Django's own parsing answers a malformed length
    return length > chat_setting("CHAT_MAX_REQUEST_BYTES")


def login_redirect(request) -> HttpResponse:
    if not request.htmx:
        return redirect_to_login(request.get_full_path())
    next_path = request.htmx.current_url_abs_path or request.get_full_path()
    response = HttpResponse("Log in to continue.", status=401)
    response["HX-Redirect"] = redirect_to_login(next_path).url
    return response


def method_not_allowed(request, methods) -> HttpResponse:
    """A 405 page rather than an empty one (a POST-only address typed into the browser)."""
    if "POST" in methods and "GET" not in methods:
        error = "This address only takes a form's button press; it is not a page you can open."
    else:
        error = f"This address does not accept {request.method} requests."
    response = error_response(request, error, status=405)
    response["Allow"] = ", ".join(methods)
    return response


def no_longer_member(request, chat_id) -> HttpResponse:
    """For someone who left or was removed, say so (still a 404: the chat is not theirs to
    see, and the room's script treats a 404 as "access gone"). Anyone else gets the plain
    404 of a chat that does not exist."""
    former = selectors.former_membership(user=request.user, chat_id=chat_id) if chat_id is not None else None
    if former is None:
        raise Http404("No such chat.")
    removed = former.reason == former.Reason.REMOVED
    error = "A group admin removed you from this group." if removed else "You left this group."
    return error_response(request, error, status=404)


def error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc) or "That request was not understood."


def error_response(request, error: str, *, status: int) -> HttpResponse:
    template = "chat/partials/error.html" if request.htmx else "chat/error.html"
    return render(request, template, {"error": error, "status": status}, status=status)


def int_param(request, name: str) -> int | None:
    """A non-negative integer query parameter, None when absent; anything else is a 400."""
    raw = request.GET.get(name, "")
    if raw == "":
        return None
    number = whole_number(raw)
    if number is None:
        raise BadRequest(f"“{name}” must be a whole number.")
    return number


def in_widget(request) -> bool:
    return bool(request.htmx) and request.htmx.target == WIDGET_PANEL_ID


def go_to(request, url: str) -> HttpResponse:
    """Redirect; for HTMX, a client-side redirect so the whole page changes."""
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def inbox_context(request, *, offset: int = 0, limit: int | None = None, widget: bool = False) -> dict:
    rows, has_more = selectors.inbox_rows(user=request.user, offset=offset, limit=limit)
    return {
        "rows": rows,
        "has_more": has_more,
        "offset": offset,
        "next_offset": offset + len(rows),
        "in_widget": widget,
    }


def room_context(request, membership, *, widget: bool = False) -> dict:
    """`membership` as loaded before opening the room marked it read: the unread divider
    goes where the unread messages began."""
    chat = membership.chat
    context = {
        "chat": chat,
        "membership": membership,
        "title": selectors.chat_title(chat=chat, user=request.user),
        "page": selectors.room_page(membership=membership),
        "message_form": MessageForm(),
        "max_length": chat_setting("CHAT_MAX_MESSAGE_LENGTH"),
        "viewer_id": request.user.pk,
        "in_widget": widget,
        "moderator": chat.is_group and membership.is_admin,
        "edit_window": chat_setting("CHAT_EDIT_WINDOW_SECONDS"),
    }
    context.update(people_room_context(request, membership, context["page"]))
    return context


def people_room_context(request, membership, page) -> dict:
    """The unread divider's place and the people whose messages this viewer sees collapsed."""
    return {
        "first_unread_id": selectors.first_unread_id(membership=membership, page=page),
        "blocked_ids": sorted(selectors.blocked_user_ids(user=request.user)),
    }


def people_info_context(request, members) -> dict:
    """Whom the viewer blocked: marked among the members, and the others listed apart so
    that anyone blocked can be unblocked, even once no chat is shared any more."""
    blocked = selectors.blocked_people(user=request.user)
    member_ids = {member.user_id for member in members}
    return {
        "blocked_ids": {person.pk for person in blocked},
        "blocked_elsewhere": [person for person in blocked if person.pk not in member_ids],
    }


def widget_list_response(request) -> HttpResponse:
    return render(request, "chat/partials/widget_response_list.html", inbox_context(request, widget=True))


# --- inbox ---------------------------------------------------------------------------


@chat_view("GET")
def chat_list(request):
    context = inbox_context(request)
    context["new_chat_form"] = NewChatForm(user=request.user)
    context["new_group_form"] = NewGroupForm(user=request.user)
    return render(request, "chat/chat_list.html", context)


# A live refresh brings back at most this many pages, however many "Show more" loaded.
REFRESH_MAX_PAGES = 10


@chat_view("GET")
def chat_list_partial(request):
    """The "Show more" page at `offset`, or a live refresh of the `shown` rows the list has.

    A refresh replaces the whole list, so it brings back as many rows as were on screen
    (the pages loaded with "Show more" too), up to REFRESH_MAX_PAGES pages.
    """
    offset = int_param(request, "offset") or 0
    page_size = chat_setting("CHAT_INBOX_PAGE_SIZE")
    shown = int_param(request, "shown") or page_size
    limit = min(max(shown, page_size), page_size * REFRESH_MAX_PAGES)
    widget = request.GET.get("widget") == "1"
    context = inbox_context(request, offset=offset, limit=limit, widget=widget)
    return render(request, "chat/partials/chat_list_fragment.html", context)


# --- starting chats ------------------------------------------------------------------


@chat_view("GET", "POST")
def new_chat(request):
    form = NewChatForm(request.POST if request.method == "POST" else None, user=request.user)
    if request.method == "POST" and form.is_valid():
        check_rate(action="new_chat", key=request.user.pk)
        try:
            chat, created = services.get_or_create_direct_chat(user=request.user, other=form.cleaned_data["other"])
        except services.Blocked as exc:  # said in the form, where they typed the address
            form.add_error("email", str(exc))
            return new_chat_form_response(request, form, status=403)
        if not created:
            messages.info(request, "You already had a chat with this person; here it is.")
        return go_to(request, reverse("chat:room", args=[chat.pk]))
    return new_chat_form_response(request, form, status=400 if form.is_bound else 200)


def new_chat_form_response(request, form, *, status: int) -> HttpResponse:
    if request.htmx:
        return render(request, "chat/partials/new_chat_form.html", {"new_chat_form": form}, status=status)
    return render(request, "chat/new_chat.html", {"new_chat_form": form}, status=status)


@chat_view("GET", "POST")
def new_group(request):
    form = NewGroupForm(request.POST if request.method == "POST" else None, user=request.user)
    if request.method == "POST" and form.is_valid():
        check_rate(action="new_group", key=request.user.pk)
        try:
            chat = services.create_group_chat(
                creator=request.user, name=form.cleaned_data["name"], members=form.cleaned_data["members"]
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Group “{chat.name}” created.")
            return go_to(request, reverse("chat:room", args=[chat.pk]))
    status = 400 if form.is_bound else 200
    if request.htmx:
        return render(request, "chat/partials/new_group_chat_form.html", {"new_group_form": form}, status=status)
    return render(request, "chat/new_chat.html", {"new_group_form": form}, status=status)


@chat_view("GET")
def check_user(request):
    """Live answer while someone types an e-mail: found (with the name), not found, or you."""
    form = CheckUserForm(request.GET)
    context = {"state": "invalid"}
    if form.is_valid():
        found = selectors.find_user_by_email(email=form.cleaned_data["email"], looked_up_by=request.user)
        if found is None:
            context = {"state": "not_found"}
        elif found.pk == request.user.pk:
            context = {"state": "self"}
        else:
            context = {"state": "found", "name": selectors.display_name(found)}
    elif not request.GET.get("email", "").strip():
        context = {"state": "empty"}
    return render(request, "chat/partials/check_user_result.html", context)


# --- widget --------------------------------------------------------------------------


@chat_view("GET")
def widget(request):
    if request.htmx:
        return widget_list_response(request)
    return render(request, "chat/chat_widget.html", inbox_context(request, widget=True))


@chat_view("GET")
def widget_room(request, pk):
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    services.mark_read(chat=membership.chat, user=request.user)
    context = room_context(request, membership, widget=True)
    template = "chat/partials/widget_response_room.html" if request.htmx else "chat/chat_widget.html"
    return render(request, template, context)


# --- a chat --------------------------------------------------------------------------


@chat_view("GET")
def room(request, pk):
    """The newest page of the chat; opening it marks everything read."""
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    services.mark_read(chat=membership.chat, user=request.user)
    return render(request, "chat/room.html", room_context(request, membership))


@chat_view("GET")
def messages_fragment(request, pk):
    """Older messages (`?before=<id>`) with the next trigger, newer ones (`?after=<id>`), or
    the ones between two ids (`?after=<id>&before=<id>`: a gap a room wants filled)."""
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    changed_since = int_param(request, "changed_since")
    if changed_since is not None:
        return changes_fragment(request, membership, changed_since)
    before, after = int_param(request, "before"), int_param(request, "after")
    if before is not None and after is not None and after >= before:
        raise BadRequest("“after” must be smaller than “before”.")
    if after is not None:
        metrics.count(metrics.CATCH_UP_FETCHES)
    page = selectors.messages_page(membership=membership, before=before, after=after)
    context = {"chat": membership.chat, "page": page, "viewer_id": request.user.pk}
    return render(request, "chat/partials/message_list_fragment.html", context)


@chat_view("POST")
def send(request, pk):
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    form = MessageForm(request.POST)
    if not form.is_valid():  # e.g. a null character, which Django's fields refuse
        return send_error(request, pk, " ".join(message for errors in form.errors.values() for message in errors))
    if refusing_sends():  # past the process's capacity, as its sockets' sends are: nothing stored
        return send_busy(request, pk)
    try:
        message = stored_message(request, membership, form.cleaned_data)
    except Busy:  # over capacity while it waited, or the database busy: sent again with its client id
        return send_busy(request, pk)
    except ValidationError as exc:
        return send_error(request, pk, error_text(exc))
    except services.Blocked as exc:  # a direct chat with a block: said where the message was typed
        return send_error(request, pk, str(exc), status=403)
    except RateLimited as exc:
        response = send_error(request, pk, str(exc), status=429)
        response["Retry-After"] = str(exc.retry_after)
        return response
    if not request.htmx:
        return redirect("chat:room", pk)
    context = {"message": message, "chat": membership.chat, "viewer_id": request.user.pk, "clear_send_error": True}
    return render(request, "chat/partials/message_bubble.html", context)


def stored_message(request, membership, fields: dict) -> Message:
    """The message sent, stored with this process's socket sends on its serving loop
    (`sends.store_from_a_request`: in groups, answered busy past capacity), else here (no
    server loop runs: a management command, a test)."""
    send = Send(
        chat_id=membership.chat_id,
        sender=request.user,
        body=fields["body"],
        client_id=fields["client_id"],
        reply_to_id=fields["reply_to"],
    )
    message = store_from_a_request(send)
    if message is None:
        return services.send_message_within_rate(
            chat=membership.chat,
            sender=send.sender,
            body=send.body,
            client_id=send.client_id or None,
            reply_to_id=send.reply_to_id,
        )
    return message


def send_busy(request, pk: int) -> HttpResponse:
    metrics.count(metrics.SENDS_BUSY)
    response = send_error(request, pk, SERVER_BUSY, status=503)
    response["Retry-After"] = str(Busy.retry_after)
    # Expected under overload, and retried by the page: a warning on Django's request
    # logger, not the error it logs for other 5xx (which error trackers report).
    log_response("Busy: %s", request.path, response=response, request=request, level="warning")
    return response


def send_error(request, pk: int, error: str, *, status: int = 400) -> HttpResponse:
    """The reason, swapped into the form's error slot rather than the message list."""
    if not request.htmx:
        return error_response(request, error, status=status)
    response = render(request, "chat/partials/send_error.html", {"error": error}, status=status)
    return reswap(retarget(response, f"#send-error-{pk}"), "innerHTML")


@chat_view("GET")
def mention_candidates(request, pk):
    """The group's other members as JSON, for the message box's @mention autocomplete."""
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    return JsonResponse({"members": selectors.mention_candidates(chat=membership.chat, user=request.user)})


@chat_view("GET")
def info(request, pk):
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    return render_info(request, membership)


def render_info(request, membership) -> HttpResponse:
    chat = membership.chat
    members = selectors.chat_members(chat=chat)
    context = {
        "chat": chat,
        "membership": membership,
        "title": selectors.chat_title(chat=chat, user=request.user),
        "members": members,
        "in_widget": in_widget(request),
        "other_member": next((m for m in members if m.user_id != request.user.pk), None),
    }
    context.update(people_info_context(request, members))
    template = "chat/partials/widget_info.html" if context["in_widget"] else "chat/chat_info.html"
    return render(request, template, context)


@chat_view("POST")
def leave(request, pk):
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    title = membership.chat.name
    services.leave_group(chat=membership.chat, user=request.user)
    messages.success(request, f"You left “{title}”.")
    return after_removal(request)


@chat_view("POST")
def delete(request, pk):
    """Delete for me: hidden from my list until someone writes again."""
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    services.soft_delete_chat(chat=membership.chat, user=request.user)
    messages.success(request, "Chat deleted from your list.")
    return after_removal(request)


@chat_view("POST")
def delete_group(request, pk):
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    title = membership.chat.name
    services.delete_group(chat=membership.chat, actor=request.user)
    messages.success(request, f"Group “{title}” deleted for everyone.")
    return after_removal(request)


def after_removal(request) -> HttpResponse:
    if in_widget(request):
        return widget_list_response(request)
    return go_to(request, reverse("chat:list"))


@chat_view("GET", "POST")
def edit(request, pk):
    """Admins rename the group and add or remove members; each action is its own form."""
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    chat = membership.chat
    if not (chat.is_group and membership.is_admin):
        raise PermissionDenied("Only group admins can edit the group.")
    rename_form, add_form = RenameGroupForm(initial={"name": chat.name}), AddMemberForm(user=request.user)
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "rename":
            rename_form = RenameGroupForm(request.POST)
            if rename_form.is_valid():
                try:
                    services.rename_group(chat=chat, actor=request.user, name=rename_form.cleaned_data["name"])
                except ValidationError as exc:
                    rename_form.add_error("name", exc)
                else:
                    messages.success(request, "Group renamed.")
                    return redirect("chat:edit", pk)
        elif action == "add":
            add_form = AddMemberForm(request.POST, user=request.user)
            if add_form.is_valid():
                added = services.add_members(chat=chat, actor=request.user, users=[add_form.cleaned_data["user"]])
                messages.success(request, "Member added." if added else "They are already in the group.")
                return redirect("chat:edit", pk)
        elif action == "remove":
            remove_form = RemoveMemberForm(request.POST)
            if not remove_form.is_valid():
                raise BadRequest("Say whom to remove.")
            removed = remove_member(chat=chat, actor=request.user, user_id=remove_form.cleaned_data["user_id"])
            messages.success(request, f"{removed} was removed from the group.")
            return redirect("chat:edit", pk)
        else:
            raise BadRequest("Unknown action.")
    context = {
        "chat": chat,
        "rename_form": rename_form,
        "add_form": add_form,
        "members": selectors.chat_members(chat=chat),
        "viewer_id": request.user.pk,
    }
    return render(request, "chat/edit_group.html", context, status=400 if request.method == "POST" else 200)


def remove_member(*, chat, actor, user_id: int) -> str:
    member = next((m.user for m in selectors.chat_members(chat=chat) if m.user_id == user_id), None)
    if member is None:
        raise BadRequest("They are not in this group.")
    services.remove_member(chat=chat, actor=actor, user=member)
    return selectors.display_name(member)


# --- people: mute a chat, block a person ----------------------------------------------


@chat_view("POST")
def mute(request, pk):
    """Mute or unmute the chat for me (`muted=yes|no`)."""
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    form = MuteForm(request.POST)
    if not form.is_valid():
        raise BadRequest("Say whether to mute (muted=yes) or unmute (muted=no).")
    muted = form.cleaned_data["muted"]
    services.set_chat_muted(chat=membership.chat, user=request.user, muted=muted)
    membership.is_muted = muted
    return after_info_action(request, membership, "Chat muted." if muted else "Chat unmuted.")


@chat_view("POST")
def block(request, pk):
    """Block a member of this chat (the other person of a direct chat, or someone in a group)."""
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    person = person_from_form(request, members_of=membership.chat)
    services.block_user(blocker=request.user, blocked=person)
    name = selectors.display_name(person)
    return after_info_action(request, membership, f"You blocked {name}.")


@chat_view("POST")
def unblock(request, pk):
    """Unblock someone, whether or not they are still in this chat."""
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    person = person_from_form(request)
    services.unblock_user(blocker=request.user, blocked=person)
    return after_info_action(request, membership, f"You unblocked {selectors.display_name(person)}.")


def person_from_form(request, *, members_of=None):
    """The user named by `user_id`: a 400 without one, a 404 for nobody (or, with
    `members_of`, for someone not in that chat)."""
    form = PersonForm(request.POST)
    if not form.is_valid():
        raise BadRequest("Say whom (user_id).")
    user_id = form.cleaned_data["user_id"]
    if members_of is not None:
        member = next((m.user for m in selectors.chat_members(chat=members_of) if m.user_id == user_id), None)
        if member is None:
            raise Http404("Nobody with this id is in this chat.")
        return member
    person = selectors.user_by_id(user_id=user_id)
    if person is None:
        raise Http404("Nobody with this id.")
    return person


def after_info_action(request, membership, done: str) -> HttpResponse:
    """Back to the info page: re-rendered in the widget, a redirect with a note on full pages."""
    if in_widget(request):
        return render_info(request, membership)
    messages.success(request, done)
    return go_to(request, reverse("chat:info", args=[membership.chat_id]))


# --- message changes: edit, delete for everyone, reactions, report ----------------------
#
# Each answers htmx with the message's bubble as it now is (swapped over the old one) and a
# browser without JavaScript with a redirect back to the message in the room. A refused
# change comes back as the bubble with the reason in it, so the swap never loses the message.


def changes_fragment(request, membership, changed_since: int) -> HttpResponse:
    """`messages/?changed_since=<cursor>`: the bubbles of the messages changed after it."""
    changes = selectors.messages_changed_since(membership=membership, since=changed_since)
    context = {"chat": membership.chat, "changes": changes, "viewer_id": request.user.pk}
    return render(request, "chat/partials/message_changes_fragment.html", context)


def message_of(request, pk: int, message_id: int):
    membership = selectors.membership_or_404(user=request.user, chat_id=pk)
    return membership, selectors.message_or_404(membership=membership, message_id=message_id)


def bubble(request, membership, message, *, status: int = 200, **extra) -> HttpResponse:
    """The message's bubble as this viewer sees it, reactions included."""
    if not hasattr(message, "reaction_counts"):  # as a service returned it
        message = selectors.with_reactions([message])[0]
    context = {"message": message, "chat": membership.chat, "viewer_id": request.user.pk, **extra}
    return render(request, "chat/partials/message_bubble.html", context, status=status)


def back_to_message(message) -> HttpResponse:
    return redirect(reverse("chat:room", args=[message.chat_id]) + f"#message-{message.pk}")


def refused(request, membership, message, exc: Exception, **extra) -> HttpResponse:
    """The bubble with the reason (htmx), or the error page; 403, 400 or 429 as chat_view would."""
    status = 403 if isinstance(exc, PermissionDenied) else 429 if isinstance(exc, RateLimited) else 400
    error = error_text(exc) if isinstance(exc, ValidationError) else str(exc)
    response = bubble(request, membership, message, status=status, action_error=error, **extra)
    if not request.htmx:
        response = error_response(request, error, status=status)
    if isinstance(exc, RateLimited):
        response["Retry-After"] = str(exc.retry_after)
    return response


def message_page(request, template: str, context: dict, *, status: int = 200) -> HttpResponse:
    """A change's form: the partial alone for htmx, inside a page of its own without JavaScript."""
    if request.htmx:
        return render(request, template, context, status=status)
    return render(request, "chat/message_page.html", {**context, "partial": template, "on_page": True}, status=status)


@chat_view("GET")
def message_bubble(request, pk, message_id):
    """One message as it is now (an edit cancelled); without JavaScript, its page of actions."""
    membership, message = message_of(request, pk, message_id)
    if request.htmx:
        return bubble(request, membership, message)
    mine = message.sender_id == request.user.pk
    context = {
        "message": message,
        "chat": membership.chat,
        "viewer_id": request.user.pk,
        "title": "Message",
        "can_edit": mine and services.edit_window_open(message),
        "can_delete": mine or (membership.chat.is_group and membership.is_admin),
        "can_report": not mine,
    }
    return message_page(request, "chat/partials/message_menu_page.html", context)


@chat_view("GET", "POST")
def edit_message(request, pk, message_id):
    """Inline editing: GET swaps the bubble for its edit form, POST saves and swaps it back."""
    membership, message = message_of(request, pk, message_id)
    if request.method == "GET":
        services.require_editable(message=message, user=request.user)
        form = EditMessageForm(initial={"body": message.body})
        return edit_form_response(request, membership, message, form)
    form = EditMessageForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError([error for errors in form.errors.values() for error in errors])
        check_rate(action="edit", key=request.user.pk)
        message = services.edit_message(message=message, user=request.user, body=form.cleaned_data["body"])
    except ValidationError as exc:
        return edit_form_response(request, membership, message, form, error=error_text(exc), status=400)
    except (PermissionDenied, RateLimited) as exc:
        return refused(request, membership, message, exc)
    return bubble(request, membership, message) if request.htmx else back_to_message(message)


def edit_form_response(request, membership, message, form, *, error: str = "", status: int = 200) -> HttpResponse:
    if request.htmx:
        return bubble(request, membership, message, status=status, edit_form=form, action_error=error)
    context = {"message": message, "chat": membership.chat, "edit_form": form, "action_error": error}
    context["title"] = "Edit message"
    return message_page(request, "chat/partials/message_edit_form.html", context, status=status)


@chat_view("GET", "POST")
def delete_message(request, pk, message_id):
    """Delete for everyone. GET asks first (the room's dialog, or a page of its own)."""
    membership, message = message_of(request, pk, message_id)
    if request.method == "GET":
        services.require_deletable(message=message, chat=membership.chat, membership=membership)
        context = {"message": message, "chat": membership.chat, "title": "Delete message"}
        return message_page(request, "chat/partials/message_delete_confirm.html", context)
    try:
        check_rate(action="edit", key=request.user.pk)
        message = services.delete_message(message=message, actor=request.user)
    except (PermissionDenied, RateLimited) as exc:
        return refused(request, membership, message, exc)
    if not request.htmx:
        messages.success(request, "Message deleted for everyone.")
        return back_to_message(message)
    return bubble(request, membership, message)


@chat_view("POST")
def react(request, pk, message_id):
    """Toggle one of CHAT_REACTIONS on the message (the button pressed names it), or with
    `on=true`/`on=false` make it so, as the room socket's react frame can."""
    membership, message = message_of(request, pk, message_id)
    try:
        check_rate(action="react", key=request.user.pk)
        on = request.POST.get("on")
        if on not in (None, "true", "false"):
            raise ValidationError("on must be true or false.")
        # As stored under the reaction's change (an edit may have come since the read above).
        message = services.toggle_reaction(
            message=message, user=request.user, emoji=request.POST.get("emoji"), on=None if on is None else on == "true"
        )
    except (ValidationError, RateLimited) as exc:
        return refused(request, membership, message, exc)
    if not request.htmx:
        return back_to_message(message)
    return bubble(request, membership, message)


@chat_view("GET", "POST")
def report_message(request, pk, message_id):
    """Report someone else's message to the site's staff, with a reason."""
    membership, message = message_of(request, pk, message_id)
    form = ReportForm(request.POST if request.method == "POST" else None)
    context = {"message": message, "chat": membership.chat, "title": "Report message"}
    if request.method == "POST" and form.is_valid():
        check_rate(action="report", key=request.user.pk)
        try:
            services.report_message(message=message, reporter=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            if not request.htmx:
                messages.success(request, "Thank you. The site's staff will look at this message.")
                return back_to_message(message)
            return render(request, "chat/partials/message_report_done.html", context)
    status = 400 if form.is_bound else 200
    return message_page(request, "chat/partials/message_report_form.html", {**context, "form": form}, status=status)
