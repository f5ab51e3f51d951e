"""A signed-in browser keeps no copy of the pages it was sent, so Back shows them current."""

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_pages_for_a_signed_in_browser_are_not_stored(client, django_user_model):
    client.force_login(django_user_model.objects.create_user(username="erin", email="erin@example.com"))

    response = client.get(reverse("signup"))

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


def test_pages_for_a_visitor_without_a_session_keep_their_caching(client):
    response = client.get(reverse("signup"))

    assert response.status_code == 200
    assert not response.has_header("Cache-Control")


@pytest.mark.django_db(transaction=True)
async def test_the_async_request_path_marks_pages_too(async_client, django_user_model):
    create_user = sync_to_async(django_user_model.objects.create_user)
    user = await create_user(username="erin", email="erin@example.com")
    await async_client.aforce_login(user)

    response = await async_client.get(reverse("signup"))

    assert "no-store" in response["Cache-Control"]
