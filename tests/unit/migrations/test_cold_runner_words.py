"""How the cold runner words rates and key expiries in its log and files table."""
import pytest

from migrations_app.cold_runner import _shown_expiry, _shown_rate


@pytest.mark.parametrize(("nbytes", "seconds", "shown"), [
    (int(0.2 * 2**20), 0.49, 0.4),   # a small disk is not "0 MiB/s"
    (5 * 2**20, 1.0, 5.0),
    (512 * 2**20, 3.1, 165),         # whole numbers from 10 MiB/s up
    (2**20, 0.0, 1000),              # no division by zero (a millisecond at least)
])
def test_rates_keep_a_decimal_only_below_ten(nbytes, seconds, shown):
    assert _shown_rate(nbytes, seconds) == shown


@pytest.mark.parametrize(("stamp", "shown"), [
    ("20261204123842", "2026-12-04 12:38:42"),
    ("", ""),
    ("2026120412", "2026120412"),    # not sshd's format: shown as it came
    ("2026-12-04T12", "2026-12-04T12"),
])
def test_expiry_reads_as_a_date(stamp, shown):
    assert _shown_expiry(stamp) == shown
