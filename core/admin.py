"""Django's own admin: for superusers only (data repairs). People are managed on the portal's
People pages, which audit every change and know the portal's roles."""

from django.contrib import admin


def _superusers_only(request) -> bool:
    return request.user.is_active and request.user.is_superuser


admin.site.has_permission = _superusers_only
admin.site.site_header = "VMPortal — Django admin (superusers only)"
admin.site.index_title = (
    "For superusers only, to repair data. Manage people and roles on the portal's People page, "
    "which audits every change."
)
