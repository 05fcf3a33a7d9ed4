"""Every URL with an id, for every role and method: an id out of range is a 404, never a 500.

The patterns are walked from the URL configuration, so a new urls.py entry is covered too.
"""

import re
import uuid

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern

from core.ids import MAX_ID

pytestmark = pytest.mark.django_db

PARAM = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
OUT_OF_RANGE = [str(MAX_ID + 1), "99999999999999999999", "0", "9" * 400]


def routes(patterns=None, prefix=""):
    """Every route string ("hosts/<id:pk>/…") of the portal's URL configuration."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if not isinstance(entry.pattern, RoutePattern):
            continue  # regex patterns (the admin's app index) take no ids
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield route


def fill(route: str, id_value: str) -> str:
    def value(match):
        converter = match.group("converter") or "str"
        return {"id": id_value, "int": id_value, "uuid": str(uuid.uuid4())}.get(converter, "x")

    return "/" + PARAM.sub(value, route)


ID_ROUTES = sorted({r for r in routes()
                    if any(m.group("converter") in ("id", "int") for m in PARAM.finditer(r))
                    and not r.startswith("admin/")})


def test_every_portal_id_in_a_url_is_a_bounded_id():
    # <int:…> takes any number of digits, which then fails inside the query.
    assert ID_ROUTES
    unbounded = [r for r in ID_ROUTES if "<int:" in r]
    assert unbounded == []


@pytest.fixture
def clients(viewer, operator, admin, nobody):
    def logged_in(user):
        client = Client(raise_request_exception=False)
        client.force_login(user)
        return client

    return {
        "anonymous": Client(raise_request_exception=False),
        "no role": logged_in(nobody),
        "viewer": logged_in(viewer),
        "operator": logged_in(operator),
        "admin": logged_in(admin),
    }


def test_out_of_range_ids_are_404_for_every_role_and_method(clients):
    wrong = []
    for route in ID_ROUTES:
        for bad in OUT_OF_RANGE:
            url = fill(route, bad)
            for role, client in clients.items():
                for method in ("get", "post"):
                    status = getattr(client, method)(url).status_code
                    if status != 404:
                        wrong.append(f"{method.upper()} {url[:80]} as {role}: {status}")
    assert wrong == []


def test_the_largest_id_that_exists_nowhere_is_never_a_500(clients):
    errors = []
    for route in ID_ROUTES:
        url = fill(route, str(MAX_ID))
        for role, client in clients.items():
            for method in ("get", "post"):
                status = getattr(client, method)(url).status_code
                if status >= 500:
                    errors.append(f"{method.upper()} {url} as {role}: {status}")
    assert errors == []
