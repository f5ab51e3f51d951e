"""What a signed-in browser may keep of the pages it was sent."""

from django.conf import settings
from django.utils.cache import add_never_cache_headers
from django.utils.deprecation import MiddlewareMixin


class NoStoreWithSessionMiddleware(MiddlewareMixin):
    """`Cache-Control: no-store` on answers to a browser with a session, unless the view set its own.

    Every page shows the person's unread badge (and the chat widget): a copy the browser
    kept would come back on Back with old counts. Judged by the session cookie rather than
    `request.user`, which would need the database on the async path. The chat's own views
    mark their answers themselves. (MiddlewareMixin runs it in sync and async stacks.)
    """

    def process_response(self, request, response):
        if settings.SESSION_COOKIE_NAME in request.COOKIES and not response.has_header("Cache-Control"):
            add_never_cache_headers(response)
        return response
