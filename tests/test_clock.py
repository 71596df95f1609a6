"""The process's clock is the Redis server's: measured once per connection, read for free."""

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
