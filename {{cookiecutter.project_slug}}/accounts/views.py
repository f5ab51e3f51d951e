from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.shortcuts import render
from django.urls import reverse_lazy
from django.views.generic import CreateView

from accounts.forms import SignupForm


class SignupView(CreateView):
    form_class = SignupForm
    template_name = "registration/signup.html"
    success_url = reverse_lazy("chat:list")

    def form_valid(self, form):
        response = super().form_valid(form)
        login(self.request, self.object, backend="django.contrib.auth.backends.ModelBackend")
        return response


class LogoutView(auth_views.LogoutView):
    """Log out with a POST (the navbar's button); /accounts/logout/ typed into the address
    bar gets a page saying so instead of an empty 405."""

    def http_method_not_allowed(self, request, *args, **kwargs):
        response = render(request, "405.html", status=405)
        response["Allow"] = ", ".join(method.upper() for method in self._allowed_methods())
        return response
