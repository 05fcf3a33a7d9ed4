"""The iCal feed: parsed by icalendar, expanded by recurring-ical-events, the same occurrences as the
portal's calendar; tokens shown once, stored hashed, revocable."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import icalendar
import pytest
import recurring_ical_events
from django.utils import timezone

from calendar_app import services
from calendar_app.models import CalendarFeedToken
from calendar_app.payloads import occurrences_between
from core.actors import Actor
from tests.fakes.fleet import make_host

pytestmark = pytest.mark.django_db


def make(title, host, start, hours, **kw):
    spec = services.WindowSpec(title=title, hosts=[host], start=start, end=start + timedelta(hours=hours), **kw)
    return services.window_create(spec=spec, actor=Actor.system())


@pytest.fixture
def windows(db):
    h1, h2 = make_host("labh1"), make_host("labh2")
    now = timezone.now()
    # The first Saturday of next year's February, 02:00 in Berlin (01:00 UTC in winter).
    y = now.year + 1
    first_sat = next(datetime(y, 2, d, 1, 0, tzinfo=UTC) for d in range(1, 8) if datetime(y, 2, d).weekday() == 5)
    monthly = make('Firmware "A" & B; x,y', h1, first_sat, 2, zone="Europe/Berlin",
                   rrule="FREQ=MONTHLY;BYDAY=1SA")
    skip = occurrences_between(monthly, first_sat + timedelta(days=20), first_sat + timedelta(days=70))[0]["start"]
    monthly.exdates = [skip]
    monthly.save()
    once = make("Disk swap", h2, now + timedelta(days=3), 1)
    gone = make("Old plan", h2, now + timedelta(days=5), 1)
    services.window_cancel(window=gone, actor=Actor.system())
    return {"monthly": monthly, "once": once, "gone": gone, "skip": skip, "year": y}


def feed(client, token):
    return client.get("/maintenance/calendar.ics", {"token": token})


def test_the_feed_parses_and_expands_to_the_portals_occurrences(windows, viewer, client):
    token = services.feed_token_create(actor=Actor(user=viewer))
    response = feed(client, token)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/calendar")
    cal = icalendar.Calendar.from_ical(response.content)
    assert str(cal["REFRESH-INTERVAL"].to_ical(), "ascii") == "PT15M"
    events = {str(e["UID"]): e for e in cal.walk("VEVENT")}
    m, once, gone = windows["monthly"], windows["once"], windows["gone"]
    assert set(events) == {f"{w.uid}@vmportal" for w in (m, once, gone)}
    em = events[f"{m.uid}@vmportal"]
    assert str(em["SUMMARY"]) == 'Firmware "A" & B; x,y'  # escaped by icalendar, read back the same
    assert em["RRULE"]["BYDAY"] == ["1SA"] and "EXDATE" in em
    assert str(events[f"{gone.uid}@vmportal"]["STATUS"]) == "CANCELLED"
    assert int(events[f"{gone.uid}@vmportal"]["SEQUENCE"]) == 1
    assert str(events[f"{once.uid}@vmportal"]["STATUS"]) == "CONFIRMED"
    assert events[f"{once.uid}@vmportal"].decoded("DTSTART").utcoffset() == timedelta(0)  # one-off in UTC
    assert "labh1" in str(em["DESCRIPTION"]) and f"/maintenance/windows/{m.pk}/" in str(em["DESCRIPTION"])

    # A second implementation of RFC 5545 recurrences agrees with the portal, DST and EXDATE included.
    lo = datetime(windows["year"], 1, 1, tzinfo=UTC)
    hi = lo + timedelta(days=365)
    theirs = sorted(
        (e.decoded("DTSTART").astimezone(UTC), e.decoded("DTEND").astimezone(UTC))
        for e in recurring_ical_events.of(cal).between(lo, hi) if str(e["UID"]) == f"{m.uid}@vmportal")
    ours = sorted((datetime.fromisoformat(o["start"]), datetime.fromisoformat(o["end"]))
                  for o in occurrences_between(m, lo, hi))
    assert len(ours) == 10  # February to December, one skipped
    assert theirs == ours
    assert datetime.fromisoformat(windows["skip"]) not in [s for s, _ in ours]
    # Summer occurrences are 02:00 CEST = 00:00 UTC, winter ones 01:00 UTC.
    assert {s.hour for s, _ in ours} == {0, 1}


def test_tokens_are_stored_hashed_and_a_revoked_or_wrong_one_gets_403(windows, viewer, client):
    token = services.feed_token_create(actor=Actor(user=viewer))
    row = CalendarFeedToken.objects.get(user=viewer)
    assert row.digest == hashlib.sha256(token.encode()).hexdigest() and token not in row.digest
    assert feed(client, token).status_code == 200
    assert feed(client, token + "x").status_code == 403
    assert feed(client, "").status_code == 403
    services.feed_token_revoke(token=row, actor=Actor(user=viewer))
    assert feed(client, token).status_code == 403


def test_the_token_page_shows_a_new_token_once(viewer_client, viewer):
    page = viewer_client.post("/maintenance/calendar/feed/")
    assert page.status_code == 200
    token = page.context["new_token"]
    assert token and token in page.content.decode()
    again = viewer_client.get("/maintenance/calendar/feed/")
    assert token not in again.content.decode()


def test_a_windows_own_ics(windows, viewer_client):
    w = windows["once"]
    response = viewer_client.get(f"/maintenance/windows/{w.pk}.ics")
    cal = icalendar.Calendar.from_ical(response.content)
    assert [str(e["UID"]) for e in cal.walk("VEVENT")] == [f"{w.uid}@vmportal"]
