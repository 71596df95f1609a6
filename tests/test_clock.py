"""The process's clock is the Redis server's, measured once per connection and read for free;
and stored times shown whatever was stored, never an exception."""

from __future__ import annotations

import time

import pytest

from batchq import clock
from batchq.store.batches import BatchStore


class _Server:
    """A Redis whose clock is ``ahead_s`` ahead of this machine's."""

    def __init__(self, ahead_s: float) -> None:
        self.ahead_s = ahead_s

    async def time(self) -> tuple[int, int]:
        t = time.time() + self.ahead_s
        return int(t), int((t % 1) * 1_000_000)


@pytest.fixture(autouse=True)
def _restore_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "_offset_ms", clock.offset_ms())


@pytest.mark.parametrize("ahead_s", [7200.0, -7200.0, 0.25])
async def test_now_follows_the_server_after_sync(ahead_s: float) -> None:
    offset = await clock.sync(_Server(ahead_s))
    assert abs(offset - ahead_s * 1000) < 50
    assert clock.offset_ms() == offset
    assert abs(clock.now_ms() - (time.time() + ahead_s) * 1000) < 50


async def test_sync_against_a_real_server(store: BatchStore) -> None:
    # The test's server runs on this machine: the same clock, give or take the round trip.
    assert abs(await clock.sync(store.redis)) < 1000


def test_arq_reads_the_same_clock() -> None:
    import arq.worker

    import workers.worker  # noqa: F401  (its import points arq at batchq's clock)

    assert arq.worker.timestamp_ms is clock.now_ms  # type: ignore[attr-defined]


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
