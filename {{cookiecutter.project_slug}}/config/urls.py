from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="chat:list"), name="home"),
    path("accounts/", include("accounts.urls")),
    path("chat/", include("chat.urls")),
    path(settings.ADMIN_URL, admin.site.urls),
]
