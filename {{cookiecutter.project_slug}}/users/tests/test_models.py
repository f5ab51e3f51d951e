"""The custom user: one account per address, whatever its case."""

import pytest
from django.db import IntegrityError

from users.models import User

pytestmark = pytest.mark.django_db


def test_an_address_differing_only_in_case_is_refused_by_the_database():
    User.objects.create_user(username="erin", email="erin@example.com")

    with pytest.raises(IntegrityError):
        User.objects.create_user(username="erin2", email="Erin@Example.COM")
