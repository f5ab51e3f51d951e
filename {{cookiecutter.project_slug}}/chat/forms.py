"""Forms that parse what people type; the rules themselves live in services.py.

Forms that find people by e-mail check everything cheap first (the name, how many
addresses, their shape) and look up only a form that is otherwise valid: each lookup
counts against the person's e-mail lookup limit (selectors.charge_email_lookups).
"""

import hashlib
import re

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator, validate_email
from django.urls import reverse_lazy

from chat import selectors, services
from chat.conf import chat_setting
from chat.models import MAX_ID, Report

EMAIL_SEPARATORS = re.compile(r"[\s,;]+")


def check_user_attrs(result_id: str) -> dict:
    """htmx attributes that look the typed e-mail up and show the answer in `result_id`.

    hx-swap is set here because htmx attributes are inherited: inside a form that swaps
    itself (`outerHTML`), the first answer would replace `result_id` and every later one
    would find no target.
    """
    return {
        "autocomplete": "off",
        "hx-get": reverse_lazy("chat:check_user"),
        "hx-trigger": "input changed delay:400ms",
        "hx-target": f"#{result_id}",
        "hx-swap": "innerHTML",
        "hx-sync": "this:replace",
    }


class NewChatForm(forms.Form):
    """A direct chat with one person, found by e-mail."""

    # autofocus: a modal <dialog> focuses it when it opens (and a standalone page on load).
    email = forms.EmailField(
        label="Their e-mail",
        widget=forms.EmailInput(attrs={**check_user_attrs("new-chat-check"), "autofocus": True}),
    )

    def __init__(self, *args, user, **kwargs):
        kwargs.setdefault("auto_id", "new-chat-%s")
        super().__init__(*args, **kwargs)
        self.user = user

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        email = cleaned["email"]
        if email.lower() == (self.user.email or "").lower():
            self.add_error("email", "That is your own e-mail; pick someone else.")
            return cleaned
        other = selectors.find_user_by_email(email=email, looked_up_by=self.user)
        if other is None or other.pk == self.user.pk:
            self.add_error("email", "Nobody with this e-mail has an account.")
        else:
            cleaned["other"] = other
        return cleaned


# Room for CHAT_MAX_MEMBERS_PER_REQUEST addresses of the longest valid length and a separator.
EMAIL_LIST_CHARS_PER_ADDRESS = 256


class EmailListField(forms.CharField):
    """Several e-mails separated by commas, semicolons, spaces or new lines.

    Checked cheapest first: the text's length, then how many addresses, then their shape;
    a long paste is refused before it is split, and never echoed back whole.
    """

    widget = forms.Textarea(attrs={"rows": 3})

    def max_chars(self) -> int:
        return chat_setting("CHAT_MAX_MEMBERS_PER_REQUEST") * EMAIL_LIST_CHARS_PER_ADDRESS

    def bound_data(self, data, initial):
        return data[: self.max_chars()] if isinstance(data, str) else data

    def to_python(self, value):
        text = super().to_python(value)
        if len(text) > self.max_chars():
            limit = chat_setting("CHAT_MAX_MEMBERS_PER_REQUEST")
            raise ValidationError("That is too long; add at most %(limit)s people at a time.", params={"limit": limit})
        emails, seen = [], set()
        for email in EMAIL_SEPARATORS.split(text):
            if email and email.lower() not in seen:
                seen.add(email.lower())
                emails.append(email)
        return emails

    def validate(self, value):
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")
        limit = chat_setting("CHAT_MAX_MEMBERS_PER_REQUEST")
        if len(value) > limit:
            raise ValidationError("Add at most %(limit)s people at a time.", params={"limit": limit})
        invalid = []
        for email in value:
            try:
                validate_email(email)
            except ValidationError:
                invalid.append(email)
        if invalid:
            raise ValidationError("Not e-mail addresses: %(emails)s", params={"emails": ", ".join(invalid)})


def users_for_emails(emails, *, exclude_user) -> list:
    """The accounts for these e-mails, or a ValidationError naming the unknown ones."""
    found = selectors.find_users_by_emails(emails=emails, looked_up_by=exclude_user)
    unknown = [email for email in emails if email.lower() not in found]
    if unknown:
        raise ValidationError("Nobody has an account with: %(emails)s", params={"emails": ", ".join(unknown)})
    return [user for user in found.values() if user.pk != exclude_user.pk]


def limit_group_name(field: forms.CharField) -> None:
    """Validate the name's length here, so a long one is an error on the field.

    No `maxlength` on the input: a browser would cut a pasted name short without a word.
    `data-max-length` shows a counter near the limit instead (length-limit.js).
    """
    field.max_length = services.group_name_limit()
    field.validators.append(MaxLengthValidator(field.max_length))
    field.widget.attrs.update({"data-max-length": field.max_length, "dir": "auto"})


class NewGroupForm(forms.Form):
    name = forms.CharField(label="Group name", widget=forms.TextInput(attrs={"autofocus": True}))
    members = EmailListField(label="Members' e-mails", help_text="Separate e-mails with commas or new lines.")

    def __init__(self, *args, user, **kwargs):
        kwargs.setdefault("auto_id", "new-group-%s")
        super().__init__(*args, **kwargs)
        self.user = user
        limit_group_name(self.fields["name"])

    def clean(self):
        cleaned = super().clean()
        if self.errors:  # a bad name or list: no lookups spent
            return cleaned
        try:
            cleaned["members"] = users_for_emails(cleaned["members"], exclude_user=self.user)
        except ValidationError as error:
            self.add_error("members", error)
        else:
            if not cleaned["members"]:
                self.add_error("members", "Add at least one other person.")
        return cleaned


class RenameGroupForm(forms.Form):
    name = forms.CharField(label="Group name", widget=forms.TextInput(attrs={"autofocus": True}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        limit_group_name(self.fields["name"])


class AddMemberForm(forms.Form):
    email = forms.EmailField(
        label="Add someone by e-mail", widget=forms.EmailInput(attrs=check_user_attrs("add-member-check"))
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        found = selectors.find_user_by_email(email=cleaned["email"], looked_up_by=self.user)
        if found is None:
            self.add_error("email", "Nobody with this e-mail has an account.")
        else:
            cleaned["user"] = found
        return cleaned


class RemoveMemberForm(forms.Form):
    user_id = forms.IntegerField(min_value=1)


class MessageForm(forms.Form):
    """Only parses; `services.clean_message_body` decides what may be sent.

    A page's script names each message (`client_id`). Without a script, the rendered form
    names itself (`form_id`, from the `send_form_id` tag), and its message's client id is that
    name and the text's digest: a form submitted twice (a double click, a resubmit after a
    lost answer) stores its message once, and a form used again for other text (the back
    button) stores the new text."""

    body = forms.CharField(required=False, strip=False, widget=forms.Textarea(attrs={"rows": 1}))
    client_id = forms.CharField(required=False, strip=False)
    form_id = forms.CharField(required=False, strip=False, max_length=32)
    # The id of the message this one replies to; services.send_message checks it is in the chat.
    reply_to = forms.IntegerField(required=False, min_value=1, max_value=MAX_ID)

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("client_id") and cleaned.get("form_id") and "body" in cleaned:
            cleaned["client_id"] = form_client_id(cleaned["form_id"], cleaned["body"])
        return cleaned


def form_client_id(form_id: str, body: str) -> str:
    """The client id of `body` sent from the rendered form named `form_id` (at most 54 characters)."""
    digest = hashlib.blake2b(body.encode(errors="surrogatepass"), digest_size=8).hexdigest()
    return f"form:{form_id}:{digest}"


class CheckUserForm(forms.Form):
    email = forms.EmailField()


# --- people: mute a chat, block a person ----------------------------------------------


class MuteForm(forms.Form):
    muted = forms.TypedChoiceField(choices=[("yes", "Mute"), ("no", "Unmute")], coerce=lambda value: value == "yes")


class PersonForm(forms.Form):
    """Whom to block or unblock, by user id."""

    user_id = forms.IntegerField(min_value=1, max_value=2**62)


class EditMessageForm(forms.Form):
    """Only parses; `services.edit_message` decides what may be stored."""

    body = forms.CharField(
        required=False, strip=False, label="Message", widget=forms.Textarea(attrs={"rows": 3, "autofocus": True})
    )


class ReportForm(forms.Form):
    reason = forms.ChoiceField(choices=Report.Reason.choices, widget=forms.RadioSelect, label="What is wrong with it?")
    details = forms.CharField(
        required=False,
        label="Anything the staff should know (optional)",
        max_length=services.REPORT_DETAILS_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
