import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Each test starts with no log-in or sign-up counts from earlier tests."""
    cache.clear()
