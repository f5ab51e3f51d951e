"""The admin site with log-in throttling (accounts.throttle); accounts.admin_config installs it."""

from django.contrib import admin

from accounts.forms import AdminLoginForm, with_throttle_status


class AdminSite(admin.AdminSite):
    login_form = AdminLoginForm

    def login(self, request, extra_context=None):
        response = super().login(request, extra_context)
        context = getattr(response, "context_data", None) or {}
        return with_throttle_status(response, context.get("form"))
