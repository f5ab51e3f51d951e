from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models.functions import Lower


class User(AbstractUser):
    """The project's user. Chat finds people by e-mail, so it is required and unique,
    ignoring case: Erin@Example.com and erin@example.com are one address."""

    email = models.EmailField("email address", unique=True)

    REQUIRED_FIELDS = ["email"]

    class Meta(AbstractUser.Meta):
        constraints = [
            models.UniqueConstraint(
                Lower("email"),
                name="users_user_email_ci_unique",
                violation_error_message="A user with this e-mail address already exists.",
            ),
        ]
