"""Display filters: sizes in binary units, shares of a whole, durations."""

from __future__ import annotations

import pytest

from core.templatetags.vmportal_format import kib, percent_of, size_bytes
from migrations_app.templatetags.migration_format import secs_h


@pytest.mark.parametrize("value, text", [
    (None, ""), ("", ""), ("lots", ""), (0, "0 B"), (512, "512 B"), (1024, "1 KiB"), (1536 * 1024, "1.5 MiB"),
    (int(3.4 * 2**30), "3.4 GiB"), (100 * 2**30, "100 GiB"), (3 * 2**40, "3 TiB"),
])
def test_size_bytes(value, text):
    assert size_bytes(value) == text


def test_kib_is_size_bytes_in_kib():
    assert kib(65536) == "64 MiB" == size_bytes(65536 * 1024)


@pytest.mark.parametrize("value, whole, text", [
    (1, 4, "25 %"), (3 * 2**30, 20 * 2**30, "15 %"), (5, 0, ""), (None, 4, ""), (4, None, ""), (10, 1, "999 %"),
])
def test_percent_of(value, whole, text):
    assert percent_of(value, whole) == text


@pytest.mark.parametrize("value, text", [
    (None, "—"), (3.24, "3.2 s"), (125, "2 min 5 s"), (3599, "59 min 59 s"), (3600, "1 h 0 min"), (26640, "7 h 24 min"),
])
def test_secs_h(value, text):
    assert secs_h(value) == text
