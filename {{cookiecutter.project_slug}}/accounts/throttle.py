"""Limits on guessing passwords and on sign-up mail, counted like the chat's (chat.ratelimit).

Log-ins count per username and per client IP; a successful log-in takes its attempt back,
so only failures add up. Behind a proxy, run daphne with --proxy-headers so the client's
IP, not the proxy's, is counted. Sign-ups count per IP and per address mailed, and are
refused (503) while the counts cannot be read; log-ins go on, and the outage is logged.
Rates come from ACCOUNT_RATE_LIMITS ("action=count/period", None turns one off).
"""

from __future__ import annotations

from django.conf import settings

from chat.ratelimit import check_rate, refund

DEFAULT_RATES = {
    "login_username": "10/15m",  # failed log-ins for one username
    "login_ip": "50/15m",  # failed log-ins from one IP, whatever the username
    "signup_ip": "10/h",  # sign-ups started from one IP
    "signup_email": "3/h",  # sign-up mails to one address
}


def rate(action: str) -> str | None:
    return {**DEFAULT_RATES, **getattr(settings, "ACCOUNT_RATE_LIMITS", {})}.get(action)


def client_ip(request) -> str:
    return request.META.get("REMOTE_ADDR") or "unknown"


def login_keys(request, username: str) -> list[tuple[str, str]]:
    return [("login_username", username.strip().lower()), ("login_ip", client_ip(request))]


def charge_login(request, username: str) -> None:
    """Count one log-in attempt; RateLimited once either limit is reached."""
    for action, key in login_keys(request, username):
        if rate(action):
            check_rate(action=action, key=key, rate=rate(action))


def refund_login(request, username: str) -> None:
    for action, key in login_keys(request, username):
        if rate(action):
            refund(action=action, key=key, rate=rate(action))


def charge_signup_from(request) -> None:
    if rate("signup_ip"):
        check_rate(action="signup_ip", key=client_ip(request), rate=rate("signup_ip"), fail_open=False)


def charge_signup_mail(email: str) -> None:
    if rate("signup_email"):
        check_rate(action="signup_email", key=email.strip().lower(), rate=rate("signup_email"), fail_open=False)


def wait_text(seconds: int) -> str:
    minutes = -(-seconds // 60)
    return f"{seconds} seconds" if seconds < 60 else f"{minutes} minute{'s' if minutes != 1 else ''}"
