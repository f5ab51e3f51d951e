from django.conf import settings
from django.contrib import admin
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.decorators.cache import cache_control
from django.views.generic import RedirectView


@cache_control(max_age=60 * 60 * 24, public=True)
def favicon(request):
    """Browsers ask for /favicon.ico on pages without a <link rel="icon"> (the admin, error
    pages); send them to the SVG icon the other pages link to. Not permanent: its static
    URL changes with its content."""
    return redirect(static("favicon.svg"))


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="chat:list"), name="home"),
    path("favicon.ico", favicon),
    path("accounts/", include("accounts.urls")),
    path("chat/", include("chat.urls")),
    path(settings.ADMIN_URL, admin.site.urls),
]

# A page that could not reach the database in time is a 503 the person can retry (config/errors.py).
handler500 = "config.errors.server_error"
