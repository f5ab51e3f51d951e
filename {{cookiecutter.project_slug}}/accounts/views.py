import logging
import smtplib

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods
from django.views.generic import FormView, TemplateView

from accounts import services, throttle
from accounts.forms import ConfirmSignupForm, LoginForm, SignupForm, with_throttle_status
from chat.ratelimit import RateLimited, RateLimitUnavailable

logger = logging.getLogger(__name__)


class LoginView(auth_views.LoginView):
    form_class = LoginForm
    redirect_authenticated_user = True

    def form_invalid(self, form):
        return with_throttle_status(super().form_invalid(form), form)


class SignupView(FormView):
    """Sign-up mails the address and answers the same whether or not it has an account."""

    form_class = SignupForm
    template_name = "registration/signup.html"

    def post(self, request, *args, **kwargs):
        try:
            throttle.charge_signup_from(request)
            return super().post(request, *args, **kwargs)
        except (RateLimited, RateLimitUnavailable) as exc:
            return self.refused(str(exc), status=429 if isinstance(exc, RateLimited) else 503, exc=exc)

    def form_valid(self, form):
        email = form.cleaned_data["email"]
        throttle.charge_signup_mail(self.request, email)
        try:
            services.start_signup(
                username=form.cleaned_data["username"],
                email=email,
                password=form.cleaned_data["password1"],
                absolute_url=self.request.build_absolute_uri,
            )
        except (OSError, smtplib.SMTPException):
            logger.exception("Could not send the sign-up mail")
            return self.refused("We could not send the e-mail just now; try again in a few minutes.", status=503)
        return redirect("signup_sent")

    def refused(self, error: str, *, status: int, exc=None):
        form = self.get_form()
        form.add_error(None, error)
        response = self.render_to_response(self.get_context_data(form=form), status=status)
        if exc is not None:
            response["Retry-After"] = str(exc.retry_after)
        return response


class SignupSentView(TemplateView):
    template_name = "registration/signup_sent.html"


@require_http_methods(["GET", "POST"])
def confirm_signup(request, token):
    """The link in the sign-up mail: the sign-up's password creates the account and logs in."""
    pending = services.pending_signup_for(token)
    if pending is None:
        return render(request, "registration/signup_confirm.html", {"invalid": True}, status=400)
    form = ConfirmSignupForm(request.POST if request.method == "POST" else None, pending=pending)
    if form.is_valid():
        try:
            user = services.confirm_signup(pending=pending)
        except services.SignupConflict as exc:
            form.add_error(None, str(exc))
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, "Your e-mail is confirmed. Welcome!")
            return redirect("chat:list")
    status = 400 if form.is_bound else 200
    return render(request, "registration/signup_confirm.html", {"form": form, "pending": pending}, status=status)


class LogoutView(auth_views.LogoutView):
    """Log out with a POST (the navbar's button); /accounts/logout/ typed into the address
    bar gets a page saying so instead of an empty 405."""

    def http_method_not_allowed(self, request, *args, **kwargs):
        response = render(request, "405.html", status=405)
        response["Allow"] = ", ".join(method.upper() for method in self._allowed_methods())
        return response
