"""Times in each person's own zone: activates the zone they chose (calendar_app.services.user_zone)."""

from __future__ import annotations

from django.utils import timezone

from .recurrence import RecurrenceError, zone_for
from .services import user_zone

SESSION_KEY = "calendar_zone"


class UserZoneMiddleware:
    """Pages show and forms read times in the signed-in person's zone (read once per session)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            name = request.session.get(SESSION_KEY)
            if name is None:
                name = request.session[SESSION_KEY] = user_zone(user)
            try:
                timezone.activate(zone_for(name))
            except RecurrenceError:  # a zone the system no longer has: the portal's own
                timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
