"""Every write of the sign-up: start one (mail the address), confirm it (create the account).

An account is created only when the address's owner follows the link mailed to it and
gives the sign-up's password, so an address cannot be claimed by someone who does not
read its mail, and a stranger's pending sign-up never blocks the owner's. Signing up with
an address that has an account gives the same answer, and mails the owner instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core import signing
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.models import PendingSignup

SIGNUP_SALT = "accounts.signup.confirm"
DEFAULT_LINK_MAX_AGE = 60 * 60 * 24 * 2  # two days


class SignupConflict(Exception):
    """The address or username got an account before this sign-up was confirmed."""


def link_max_age() -> int:
    return getattr(settings, "ACCOUNT_SIGNUP_LINK_MAX_AGE", DEFAULT_LINK_MAX_AGE)


def start_signup(*, username: str, email: str, password: str, absolute_url: Callable[[str], str]) -> None:
    """Mail `email` a confirmation link, or a note that it already has an account.

    `absolute_url` turns a path into a link (request.build_absolute_uri). The password is
    hashed either way: hashing is most of the work, and skipping it for an address that
    has an account would tell who has one by how fast the answer comes.
    """
    password_hash = make_password(password)
    PendingSignup.objects.filter(created_at__lt=timezone.now() - timedelta(seconds=link_max_age())).delete()
    existing = get_user_model()._default_manager.filter(email__iexact=email).order_by("pk").first()
    if existing is not None:
        context = {"username": existing.get_username(), "login_url": absolute_url(reverse("login"))}
        mail(email, "registration/signup_existing_email", context)
        return
    pending = PendingSignup.objects.create(username=username, email=email, password=password_hash)
    token = signing.dumps(pending.pk, salt=SIGNUP_SALT)
    confirm_url = absolute_url(reverse("signup_confirm", args=[token]))
    context = {"username": username, "confirm_url": confirm_url, "valid_hours": link_max_age() // 3600}
    mail(email, "registration/signup_confirm_email", context)


def mail(to: str, template: str, context: dict) -> None:
    subject = render_to_string(f"{template}_subject.txt", context).strip()
    send_mail(subject, render_to_string(f"{template}.txt", context), None, [to])


def pending_signup_for(token: str) -> PendingSignup | None:
    """The sign-up a link confirms, or None for a forged, expired or used link."""
    try:
        pk = signing.loads(token, salt=SIGNUP_SALT, max_age=link_max_age())
    except signing.BadSignature:
        return None
    return PendingSignup.objects.filter(pk=pk).first()


def confirm_signup(*, pending: PendingSignup):
    """Create the account; SignupConflict if the address or username was taken meanwhile.

    The check runs under a lock on the address (both user models), and the custom user
    model's unique constraint on the lower-cased address backs it up, so concurrent
    confirmations make one account and clear errors, never duplicates or a 500.
    """
    user_model = get_user_model()
    try:
        with transaction.atomic():
            lock_address(pending.email)
            manager = user_model._default_manager
            if manager.filter(email__iexact=pending.email).exists():
                raise SignupConflict("An account with this e-mail already exists; log in instead.")
            if manager.filter(username__iexact=pending.username).exists():
                raise SignupConflict(username_taken(pending))
            user = user_model(username=pending.username, email=pending.email, password=pending.password)
            user.save()
            PendingSignup.objects.filter(email__iexact=pending.email).delete()
    except IntegrityError:  # a unique constraint caught what the lock does not cover
        if user_model._default_manager.filter(email__iexact=pending.email).exists():
            raise SignupConflict("An account with this e-mail already exists; log in instead.") from None
        raise SignupConflict(username_taken(pending)) from None
    return user


def username_taken(pending: PendingSignup) -> str:
    return f"Someone took the username “{pending.username}” meanwhile; sign up again with another."


def lock_address(email: str) -> None:
    """Hold a lock on this address until the transaction ends.

    PostgreSQL: an advisory lock keyed by the address. SQLite: the project's transactions
    are IMMEDIATE (config/settings.py), so the transaction already holds the write lock.
    """
    if connection.vendor != "postgresql":
        return
    digest = hashlib.sha256(f"{SIGNUP_SALT}:{email.lower()}".encode()).digest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)])
