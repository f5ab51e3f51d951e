"""What a signed-in browser may keep of the pages it was sent."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.utils.cache import add_never_cache_headers


class NoStoreWithSessionMiddleware:
    """`Cache-Control: no-store` on answers to a browser with a session, unless the view set its own.

    Every page shows the person's unread badge (and the chat widget): a copy the browser
    kept would come back on Back with old counts. Judged by the session cookie rather than
    `request.user`, which would need the database on the async path. The chat's own views
    mark their answers themselves.
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
        return self.no_store(request, self.get_response(request))

    async def __acall__(self, request):
        return self.no_store(request, await self.get_response(request))

    @staticmethod
    def no_store(request, response):
        if settings.SESSION_COOKIE_NAME in request.COOKIES and not response.has_header("Cache-Control"):
            add_never_cache_headers(response)
        return response
