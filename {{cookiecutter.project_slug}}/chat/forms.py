"""Forms that parse what people type; the rules themselves live in services.py."""

import re

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.urls import reverse_lazy

from chat import selectors
from chat.conf import chat_setting

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

    def clean_email(self):
        email = self.cleaned_data["email"]
        other = selectors.find_user_by_email(email=email)
        if other is None:
            raise ValidationError("Nobody with this e-mail has an account.")
        if other.pk == self.user.pk:
            raise ValidationError("That is your own e-mail; pick someone else.")
        self.cleaned_data["other"] = other
        return email


class EmailListField(forms.CharField):
    """Several e-mails separated by commas, semicolons, spaces or new lines."""

    widget = forms.Textarea(attrs={"rows": 3})

    def to_python(self, value):
        text = super().to_python(value)
        emails, seen = [], set()
        for email in EMAIL_SEPARATORS.split(text):
            if email and email.lower() not in seen:
                seen.add(email.lower())
                emails.append(email)
        return emails

    def validate(self, value):
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")
        invalid = []
        for email in value:
            try:
                validate_email(email)
            except ValidationError:
                invalid.append(email)
        if invalid:
            raise ValidationError("Not e-mail addresses: %(emails)s", params={"emails": ", ".join(invalid)})
        limit = chat_setting("CHAT_MAX_MEMBERS_PER_REQUEST")
        if len(value) > limit:
            raise ValidationError("Add at most %(limit)s people at a time.", params={"limit": limit})


def users_for_emails(emails, *, exclude_user) -> list:
    """The accounts for these e-mails, or a ValidationError naming the unknown ones."""
    found = selectors.find_users_by_emails(emails=emails)
    unknown = [email for email in emails if email.lower() not in found]
    if unknown:
        raise ValidationError("Nobody has an account with: %(emails)s", params={"emails": ", ".join(unknown)})
    return [user for user in found.values() if user.pk != exclude_user.pk]


class NewGroupForm(forms.Form):
    name = forms.CharField(label="Group name", widget=forms.TextInput(attrs={"autofocus": True}))
    members = EmailListField(label="Members' e-mails", help_text="Separate e-mails with commas or new lines.")

    def __init__(self, *args, user, **kwargs):
        kwargs.setdefault("auto_id", "new-group-%s")
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["name"].max_length = chat_setting("CHAT_GROUP_NAME_MAX_LENGTH")
        self.fields["name"].widget.attrs["maxlength"] = self.fields["name"].max_length

    def clean_members(self):
        users = users_for_emails(self.cleaned_data["members"], exclude_user=self.user)
        if not users:
            raise ValidationError("Add at least one other person.")
        return users


class RenameGroupForm(forms.Form):
    name = forms.CharField(label="Group name", widget=forms.TextInput(attrs={"autofocus": True}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["name"].max_length = chat_setting("CHAT_GROUP_NAME_MAX_LENGTH")
        self.fields["name"].widget.attrs["maxlength"] = self.fields["name"].max_length


class AddMemberForm(forms.Form):
    email = forms.EmailField(
        label="Add someone by e-mail", widget=forms.EmailInput(attrs=check_user_attrs("add-member-check"))
    )

    def clean_email(self):
        email = self.cleaned_data["email"]
        user = selectors.find_user_by_email(email=email)
        if user is None:
            raise ValidationError("Nobody with this e-mail has an account.")
        self.cleaned_data["user"] = user
        return email


class RemoveMemberForm(forms.Form):
    user_id = forms.IntegerField(min_value=1)


class MessageForm(forms.Form):
    """Only parses; `services.clean_message_body` decides what may be sent."""

    body = forms.CharField(required=False, strip=False, widget=forms.Textarea(attrs={"rows": 1}))


class CheckUserForm(forms.Form):
    email = forms.EmailField()
