"""Project-wide answers that Django leaves empty."""

from django.template.loader import render_to_string
from django.utils.deprecation import MiddlewareMixin


class MethodNotAllowedPageMiddleware(MiddlewareMixin):
    """An empty 405 (a POST-only address typed into the address bar: the admin's logout,
    any view guarded by `require_POST`) becomes the 405 page, keeping its `Allow` header.

    Browsers show an empty error as "This page isn't working"; the page says what the
    address is for and links back.

    It is last in MIDDLEWARE and sync-only, which sets how Django runs all the others under
    ASGI. Django runs a middleware that can run either way in the mode of the one below it,
    and the view's handler is async. Below a sync-only one, every middleware above runs on
    the request's thread, in one trip from the event loop. With this one async-capable too,
    each of their hooks (`process_request`, `process_response`) went to the thread and back
    on its own: 17 trips to a thread for a page instead of 5 (tests/test_http_stack.py). Each
    trip waits for the event loop to come round, milliseconds on a server busy delivering
    frames.
    """

    async_capable = False

    def process_response(self, request, response):
        if response.status_code == 405 and not getattr(response, "streaming", False) and not response.content:
            response.content = render_to_string("405.html", request=request)
            response["Content-Type"] = "text/html; charset=utf-8"
        return response
