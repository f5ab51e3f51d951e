"""Project-wide answers that Django leaves empty."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.template.loader import render_to_string


class MethodNotAllowedPageMiddleware:
    """An empty 405 (a POST-only address typed into the address bar: the admin's logout,
    any view guarded by `require_POST`) becomes the 405 page, keeping its `Allow` header.

    Browsers show an empty error as "This page isn't working"; the page says what the
    address is for and links back.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self.with_page(request, self.get_response(request))

    async def __acall__(self, request):
        return self.with_page(request, await self.get_response(request))

    @staticmethod
    def with_page(request, response):
        if response.status_code == 405 and not getattr(response, "streaming", False) and not response.content:
            response.content = render_to_string("405.html", request=request)
            response["Content-Type"] = "text/html; charset=utf-8"
        return response
