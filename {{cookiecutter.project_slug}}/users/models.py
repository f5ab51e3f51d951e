from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """The project's user. Chat finds people by e-mail, so it is required and unique."""

    email = models.EmailField("email address", unique=True)

    REQUIRED_FIELDS = ["email"]
