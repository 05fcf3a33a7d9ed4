"""Query hygiene: a page runs the same number of queries with 10 rows as with 1,000.

    assert_constant_queries(client, url, grow)
    assert_constant_query_count(run, grow)      # any code: run() after grow(few), then after grow(many - few)

``grow(n)`` adds ``n`` more rows of what the page lists (synthetic rows, loopback addresses,
never contacted). The page is rendered once after ``grow(FEW)`` and once after growing to
``MANY`` (after one warm-up request, which also reads what later ones find cached); the two
counts must be equal. On failure the message names the statements the larger
render ran more often, which is where a query per row hides.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from django.db import connection
from django.test.utils import CaptureQueriesContext

FEW = 10
MANY = 1000
_LITERALS = re.compile(r"'[^']*'|\b\d+\b")


def captured_queries(client, url: str, params: dict | None = None) -> list[str]:
    """The SQL of one GET of ``url`` (which must answer 200)."""
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, params or {})
    assert response.status_code == 200, (url, response.status_code)
    return [query["sql"] for query in ctx.captured_queries]


def _queries_of(run: Callable[[], object]) -> list[str]:
    with CaptureQueriesContext(connection) as ctx:
        run()
    return [query["sql"] for query in ctx.captured_queries]


def _compare(what: str, small: list[str], large: list[str], few: int, many: int) -> None:
    if len(large) != len(small):
        extra = Counter(map(_shape, large)) - Counter(map(_shape, small))
        worst = "\n".join(f"  +{n}: {sql}" for sql, n in extra.most_common(5))
        raise AssertionError(f"{what}: {len(small)} queries with {few} rows, {len(large)} with {many}; "
                             f"run more often:\n{worst}")


def assert_constant_query_count(run: Callable[[], object], grow: Callable[[int], object], *,
                                few: int = FEW, many: int = MANY) -> tuple[int, int]:
    """``run()`` after ``grow(few)`` (once to warm up, once counted) and again after
    ``grow(many - few)``; the query counts must be equal. Returns the two counts."""
    grow(few)
    run()
    small = _queries_of(run)
    grow(many - few)
    large = _queries_of(run)
    _compare(getattr(run, "__name__", "run"), small, large, few, many)
    return len(small), len(large)


def _shape(sql: str) -> str:
    # The statement without its literal values, so "one per row" queries group together.
    return _LITERALS.sub("?", sql)[:300]


def assert_constant_queries(client, url: str, grow: Callable[[int], object], *, params: dict | None = None,
                            few: int = FEW, many: int = MANY) -> tuple[int, int]:
    """Render ``url`` after ``grow(few)`` and again after ``grow(many - few)``; the query counts
    must be equal. Returns the two counts."""
    grow(few)
    captured_queries(client, url, params)  # a first request also reads what later ones find cached
    small = captured_queries(client, url, params)
    grow(many - few)
    large = captured_queries(client, url, params)
    _compare(url, small, large, few, many)
    return len(small), len(large)
