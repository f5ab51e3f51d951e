"""Limits on guessing passwords and on sign-up mail, counted like the chat's (chat.ratelimit).

Log-ins count per username and per client IP; a successful log-in takes its attempt back,
so only failures add up. Behind a proxy, run daphne with --proxy-headers so the client's
IP, not the proxy's, is counted. Sign-ups count per IP, and mails to one address per IP
too: counted per address for everyone, three strangers' sign-ups would lock its owner
out. A request one limit refuses is taken back from the others, so it counts nowhere.
Sign-ups are refused (503) while the counts cannot be read; log-ins go on, and the outage
is logged.
Rates come from ACCOUNT_RATE_LIMITS ("action=count/period", None turns one off).
"""

from __future__ import annotations

from django.conf import settings

from chat.ratelimit import RateLimited, check_rate, refund

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
    charged = []
    for action, key in login_keys(request, username):
        if rate(action):
            try:
                check_rate(action=action, key=key, rate=rate(action))
            except RateLimited:
                take_back(charged)
                raise
            charged.append((action, key))


def refund_login(request, username: str) -> None:
    take_back([(action, key) for action, key in login_keys(request, username) if rate(action)])


def take_back(charged: list[tuple[str, str]]) -> None:
    for action, key in charged:
        refund(action=action, key=key, rate=rate(action))


def signup_ip_key(request) -> tuple[str, str]:
    return ("signup_ip", client_ip(request))


def charge_signup_from(request) -> None:
    action, key = signup_ip_key(request)
    if rate(action):
        check_rate(action=action, key=key, rate=rate(action), fail_open=False)


def charge_signup_mail(request, email: str) -> None:
    """Count one mail to `email` from this client; a refusal also takes back its sign-up."""
    if not rate("signup_email"):
        return
    key = f"{client_ip(request)} {email.strip().lower()}"
    try:
        check_rate(action="signup_email", key=key, rate=rate("signup_email"), fail_open=False)
    except RateLimited:
        take_back([signup_ip_key(request)] if rate("signup_ip") else [])
        raise
