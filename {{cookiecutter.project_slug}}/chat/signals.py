"""Close a user's sockets when their login ends: logout, a password change, deactivation.

A socket is authenticated once, at its handshake; without these, a logged-out browser's
open tabs would go on receiving messages and marking them read. Each receiver sends
`session.ended` (see `chat.events`) after the change commits, to every server process.
"""

from __future__ import annotations

from functools import partial

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save

from chat import events
from chat.realtime.consumers import CLOSE_SESSION_CHANGED, CLOSE_UNAUTHENTICATED


def connect_receivers() -> None:
    user_model = get_user_model()
    user_logged_out.connect(close_session_on_logout, dispatch_uid="chat.close_session_on_logout")
    pre_save.connect(remember_login_fields, sender=user_model, dispatch_uid="chat.remember_login_fields")
    post_save.connect(close_sockets_on_login_change, sender=user_model, dispatch_uid="chat.close_on_login_change")
    post_delete.connect(close_sockets_on_delete, sender=user_model, dispatch_uid="chat.close_sockets_on_delete")


def close_session_on_logout(sender, request, user, **kwargs) -> None:
    if user is None or request is None or not hasattr(request, "session"):
        return
    session_key = request.session.session_key
    if session_key:
        transaction.on_commit(
            partial(events.session_ended, user_id=user.pk, close_code=CLOSE_UNAUTHENTICATED, session_key=session_key)
        )


def remember_login_fields(sender, instance, update_fields=None, **kwargs) -> None:
    """Keep the stored password and is_active, to tell in post_save whether either changed.

    One query per save of an existing user, skipped for saves of other fields only (such
    as `last_login` at each login).
    """
    instance._chat_stored_login = None
    if instance.pk is None or (update_fields is not None and not {"password", "is_active"} & set(update_fields)):
        return
    instance._chat_stored_login = (
        sender._default_manager.filter(pk=instance.pk).values_list("password", "is_active").first()
    )


def close_sockets_on_login_change(sender, instance, created, **kwargs) -> None:
    stored = getattr(instance, "_chat_stored_login", None)
    if created or stored is None:
        return
    password, was_active = stored
    if was_active and not instance.is_active:
        code = CLOSE_UNAUTHENTICATED
    elif password != instance.password:
        # Other sessions are logged out by the change; the one that made it usually stays
        # logged in (update_session_auth_hash): its sockets reconnect and find out which.
        code = CLOSE_SESSION_CHANGED
    else:
        return
    transaction.on_commit(partial(events.session_ended, user_id=instance.pk, close_code=code))


def close_sockets_on_delete(sender, instance, **kwargs) -> None:
    transaction.on_commit(partial(events.session_ended, user_id=instance.pk, close_code=CLOSE_UNAUTHENTICATED))
