"""Django's admin with accounts.admin_site.AdminSite as its default site.

Its own module: INSTALLED_APPS imports it before models can be, so it imports none.
"""

from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    default_site = "accounts.admin_site.AdminSite"
