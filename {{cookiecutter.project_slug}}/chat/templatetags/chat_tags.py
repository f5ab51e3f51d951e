"""Small display filters for the chat templates."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django import template
from django.template.defaultfilters import linebreaksbr
from django.utils import formats, timezone
from django.utils.dateformat import format as format_date
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from chat import selectors, services
from chat.conf import chat_setting

register = template.Library()


@register.filter
def display_name(user) -> str:
    """A person's full name, else their username; "Deleted user" when gone."""
    return selectors.display_name(user)


@register.filter
def initials(name) -> str:
    """Up to two initials for an avatar: "Ada Lovelace" -> "AL"."""
    words = str(name or "").split()
    return "".join(word[0] for word in words[:2]).upper() or "?"


@register.filter
def chat_time(value) -> str:
    """Short, relative time for the inbox: "now", "5 min", "14:05", "Mon", "3 Mar"."""
    if not value:
        return ""
    now = timezone.now()
    age = now - value
    if age < timedelta(minutes=1):
        return "now"
    if age < timedelta(hours=1):
        return f"{int(age.total_seconds() // 60)} min"
    local = timezone.localtime(value)
    today = timezone.localtime(now).date()
    if local.date() == today:
        return format_date(local, "H:i")
    if today - local.date() < timedelta(days=7):
        return format_date(local, "D")
    if local.year == today.year:
        return format_date(local, "j M")
    return format_date(local, "j M Y")


@dataclass(frozen=True)
class Moment:
    """An instant the three ways a bubble shows it: `date:"c"`, `date:"DATETIME_FORMAT"` and
    `time:"H:i"`, worked out in one filter call instead of three (a page shows fifty)."""

    iso: str
    full: str
    clock: str


@register.filter(expects_localtime=True)
def moment(value: datetime) -> Moment:
    """`value` in the current time zone (the template engine converts it, as for `date`)."""
    return Moment(iso=value.isoformat(), full=formats.date_format(value, "DATETIME_FORMAT"), clock=f"{value:%H:%M}")


@register.filter
def unread_count(value) -> str:
    """A badge number, capped like the live badges: 120 -> "99+"."""
    try:
        count = int(str(value or 0))  # str() also resolves the context processor's lazy total
    except (TypeError, ValueError):
        return "0"
    return "99+" if count > 99 else str(count)


# --- replies and @mentions -------------------------------------------------------------


@register.filter
def quoted(original):
    """The original of a reply as its quote shows it, or None when it is gone: deleted
    for everyone (its body blanked) or removed from the database."""
    # Removed from the database: None, or "" where a template looked it up and found nothing.
    if not original or not original.body or getattr(original, "deleted_at", None):
        return None
    return original


@register.filter
def first_line(text) -> str:
    """The first non-empty line of a message, for a reply's quote."""
    return next((line.strip() for line in str(text or "").splitlines() if line.strip()), "")


def valid_mentions(message) -> list[tuple[int, int, int]]:
    """The message's mention spans that still fit its body, in order: after an edit or a
    delete a stale span is plain text rather than a highlight of the wrong words."""
    body, spans, end_of_last = message.body, [], 0
    for span in sorted(message.mentions or [], key=lambda span: span[0]):
        if not (isinstance(span, list) and len(span) == 3 and all(isinstance(part, int) for part in span)):
            continue
        start, end, user_id = span
        if end_of_last <= start < end <= len(body) and body[start] == "@":
            spans.append((start, end, user_id))
            end_of_last = end
    return spans


@register.simple_tag
def message_body(message, viewer_id=None) -> str:
    """The body, escaped, with line breaks and each @mention in a highlight (a stronger
    one for the person viewing, when known: live frames are marked by the page)."""
    if not message.mentions:  # most messages: no spans to place
        return linebreaksbr(message.body, autoescape=True)
    parts, position = [], 0
    for start, end, user_id in valid_mentions(message):
        parts.append(linebreaksbr(message.body[position:start], autoescape=True))
        mine = " mention--me" if viewer_id and user_id == viewer_id else ""
        parts.append(
            format_html(
                '<span class="mention{}" data-mention-user-id="{}">{}</span>', mine, user_id, message.body[start:end]
            )
        )
        position = end
    parts.append(linebreaksbr(message.body[position:], autoescape=True))
    return mark_safe("".join(parts))  # noqa: S308 - every part above is escaped


@register.filter
def mentions_user(message, user_id) -> bool:
    return bool(user_id) and any(span_user == user_id for _, _, span_user in valid_mentions(message))


# --- message changes ---------------------------------------------------------------------


@register.filter
def reacted_by(reaction, user_id) -> bool:
    """Whether the viewer is among the people of a `selectors.ReactionCount`."""
    return user_id in reaction.user_ids


@register.filter
def editable_now(message) -> bool:
    """Still inside CHAT_EDIT_WINDOW_SECONDS (whose message it is, the page decides)."""
    return services.edit_window_open(message)


@register.simple_tag
def send_form_id() -> str:
    """A new name for a rendered send form: see `chat.forms.MessageForm`."""
    return uuid.uuid4().hex


@register.simple_tag
def chat_reactions():
    return list(chat_setting("CHAT_REACTIONS"))
