"""The clock seam's formatting of stored times: whatever was stored, never an exception."""

from __future__ import annotations

import pytest

from batchq import clock


def test_iso_formats_epoch_milliseconds_in_utc() -> None:
    assert clock.iso(1_700_000_000_123) == "2023-11-14T22:13:20.123+00:00"
    assert clock.iso("1700000000123") == clock.iso(b"1700000000123") == clock.iso(1.700000000123e12)
    # As a Lua script's tostring() may write a large number.
    assert clock.iso("1.7e+12") == "2023-11-14T22:13:20.000+00:00"
    assert clock.iso(-5) == "1969-12-31T23:59:59.995+00:00"


@pytest.mark.parametrize("value", [None, "", b"", "soon", b"\xff\xfe", "nan", True, [1], "1 2"])
def test_iso_of_what_is_not_a_time_is_none(value: object) -> None:
    assert clock.iso(value) is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (str(86_400_000 * 99999999999999999999), "9999-12-31T23:59:59.999+00:00"),
        ("9" * 5000, "9999-12-31T23:59:59.999+00:00"),  # beyond int()'s digit limit
        ("1e400", "9999-12-31T23:59:59.999+00:00"),
        (float("inf"), "9999-12-31T23:59:59.999+00:00"),
        (-(10**30), "0001-01-01T00:00:00.000+00:00"),
        ("-1e400", "0001-01-01T00:00:00.000+00:00"),
    ],
)
def test_iso_shows_a_time_out_of_range_as_the_nearest_one(value: object, shown: str) -> None:
    assert clock.iso(value) == shown
