from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.contrib.auth.hashers import check_password
from django.core.exceptions import ValidationError

from accounts import throttle
from chat.ratelimit import RateLimited, wait_text


class SignupForm(UserCreationForm):
    """Django's sign-up form for whichever user model is active, with a required e-mail.

    It never says whether the address has an account: the address's owner learns that
    by mail (accounts.services.start_signup).
    """

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["email"].required = True

    def clean_email(self):
        return self.cleaned_data["email"].strip()

    def _get_validation_exclusions(self):
        # The model's unique e-mail (and the custom user's case-insensitive constraint)
        # would answer "already exists"; the check happens when the owner confirms.
        return {*super()._get_validation_exclusions(), "email"}


class ConfirmSignupForm(forms.Form):
    """The sign-up's password: proof that whoever follows the link also started the sign-up."""

    password = forms.CharField(
        label="Your password", strip=False, widget=forms.PasswordInput(attrs={"autofocus": True})
    )

    def __init__(self, *args, pending, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending = pending

    def clean_password(self):
        password = self.cleaned_data["password"]
        if not check_password(password, self.pending.password):
            raise ValidationError("That is not the password you chose when you signed up.")
        return password


class ThrottledLoginMixin:
    """Counts each log-in attempt before checking it; a successful one is taken back.

    Over the limit, the form says when to try again and keeps `retry_after` for the
    view's 429 response.
    """

    retry_after: int | None = None

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        try:
            throttle.charge_login(self.request, username)
        except RateLimited as exc:
            self.retry_after = exc.retry_after
            wait = wait_text(exc.retry_after)
            raise ValidationError(f"Too many failed log-ins. Try again in {wait}.", code="throttled") from None
        cleaned = super().clean()  # wrong credentials raise here, and the attempt stays counted
        throttle.refund_login(self.request, username)
        return cleaned


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass


def with_throttle_status(response, form):
    """A log-in page answered 429 with Retry-After when its form was refused for the limit."""
    if form is not None and getattr(form, "retry_after", None):
        response.status_code = 429
        response["Retry-After"] = str(form.retry_after)
    return response
