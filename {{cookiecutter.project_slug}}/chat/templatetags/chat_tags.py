"""Small display filters for the chat templates."""

from datetime import timedelta

from django import template
from django.utils import timezone
from django.utils.dateformat import format as format_date

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


@register.filter
def unread_count(value) -> str:
    """A badge number, capped like the live badges: 120 -> "99+"."""
    try:
        count = int(str(value or 0))  # str() also resolves the context processor's lazy total
    except (TypeError, ValueError):
        return "0"
    return "99+" if count > 99 else str(count)


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
def chat_reactions():
    return list(chat_setting("CHAT_REACTIONS"))
