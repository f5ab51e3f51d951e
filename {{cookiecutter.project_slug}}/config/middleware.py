"""Project-wide answers that Django leaves empty."""

from django.template.loader import render_to_string
from django.utils.deprecation import MiddlewareMixin


class MethodNotAllowedPageMiddleware(MiddlewareMixin):
    """An empty 405 (a POST-only address typed into the address bar: the admin's logout,
    any view guarded by `require_POST`) becomes the 405 page, keeping its `Allow` header.

    Browsers show an empty error as "This page isn't working"; the page says what the
    address is for and links back. (MiddlewareMixin runs it in sync and async stacks.)
    """

    def process_response(self, request, response):
        if response.status_code == 405 and not getattr(response, "streaming", False) and not response.content:
            response.content = render_to_string("405.html", request=request)
            response["Content-Type"] = "text/html; charset=utf-8"
        return response
