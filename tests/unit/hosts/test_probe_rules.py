"""When a refresh asks the host for os-release and disk placement (hosts.probe_rules), as a table."""

from datetime import datetime, timedelta, timezone

import pytest

from hosts.probe_rules import probe_due

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)
AGE = timedelta(minutes=30)


@pytest.mark.parametrize(
    ("full", "paths", "placed", "probed_at", "expected"),
    [
        # asked for: always
        (True, ["/a"], {"/a"}, NOW - timedelta(seconds=1), "a full refresh was asked for"),
        # periodic, recent, every path placed: keep what is recorded
        (False, ["/a", "/b"], {"/a", "/b", "/c"}, NOW - timedelta(minutes=29), None),
        (False, [], set(), NOW - timedelta(minutes=1), None),
        # never asked
        (False, [], set(), None, "the host was never asked"),
        # too old (the boundary counts as old)
        (False, ["/a"], {"/a"}, NOW - AGE, "the last answer is older than 30 min"),
        (False, ["/a"], {"/a"}, NOW - timedelta(days=2), "the last answer is older than 30 min"),
        # a new or moved disk
        (False, ["/a", "/new", "/new2"], {"/a"}, NOW - timedelta(minutes=1), "2 disk path(s) not placed yet"),
        # a clock that went back
        (False, ["/a"], {"/a"}, NOW + timedelta(minutes=5), "the last answer is dated in the future (clock change)"),
    ],
)
def test_probe_due(full, paths, placed, probed_at, expected):
    assert probe_due(full=full, paths=paths, placed=placed, probed_at=probed_at, now=NOW, max_age=AGE) == expected


@pytest.mark.parametrize(("age", "words"), [(timedelta(seconds=45), "45 s"), (timedelta(hours=2), "2 h"),
                                            (timedelta(seconds=90), "90 s"), (timedelta(minutes=5), "5 min")])
def test_age_in_words(age, words):
    assert probe_due(full=False, paths=[], placed=set(), probed_at=NOW - age - age, now=NOW,
                     max_age=age) == f"the last answer is older than {words}"
