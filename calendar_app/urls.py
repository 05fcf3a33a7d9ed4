from django.urls import path

from . import views

app_name = "calendar_app"

# Mounted under /maintenance/ next to the maintenance app's own pages.
urlpatterns = [
    path("calendar/", views.CalendarView.as_view(), name="calendar"),
    path("calendar/events.json", views.EventsView.as_view(), name="events"),
    path("calendar.ics", views.FeedView.as_view(), name="feed"),
    path("calendar/zone/", views.ZoneView.as_view(), name="zone"),
    path("calendar/feed/", views.FeedTokenView.as_view(), name="feed_tokens"),
    path("windows/new/", views.WindowCreateView.as_view(), name="window_create"),
    path("windows/<id:pk>/", views.WindowDetailView.as_view(), name="window_detail"),
    path("windows/<id:pk>/move/", views.WindowMoveView.as_view(), name="window_move"),
    path("windows/<id:pk>/cancel/", views.WindowCancelView.as_view(), name="window_cancel"),
    path("windows/<id:pk>.ics", views.WindowIcsView.as_view(), name="window_ics"),
]
