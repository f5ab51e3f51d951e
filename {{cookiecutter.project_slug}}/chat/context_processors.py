"""Chat data for every template, computed only if a template uses it.

`chat_total_unread` (navbar and FAB badge) and `chat_widget_rows` (the first inbox
page) are lazy: a page that renders neither runs no chat query.
"""

from django.utils.functional import SimpleLazyObject

from chat import selectors


def chat_widget(request) -> dict:
    user = getattr(request, "user", None)
    if user is None:
        return {}

    def total_unread() -> int:
        return selectors.total_unread(user=user) if user.is_authenticated else 0

    def widget_rows() -> list:
        return selectors.inbox_rows(user=user)[0] if user.is_authenticated else []

    return {"chat_total_unread": SimpleLazyObject(total_unread), "chat_widget_rows": SimpleLazyObject(widget_rows)}
