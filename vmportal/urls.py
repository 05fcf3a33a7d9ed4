from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="hosts:inventory", permanent=False)),
    path("", include("core.urls")),
    path("hosts/", include("hosts.urls")),
    path("migrations/", include("migrations_app.urls")),
    path("storage/", include("storage.urls")),
    path("maintenance/", include("calendar_app.urls")),
    path("maintenance/", include("maintenance.urls")),
    path("fleet/", include("fleet.urls")),
    path("saved-states/", include("guest_state.urls")),
    path("recovery/", include("recovery.urls")),
    path("admin/", admin.site.urls),
]
