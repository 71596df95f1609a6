"""A real worker process, SIGTERMed while a receiver trickles its reply to the worker's hook
POST, exits within its shutdown grace (not at the POST's far longer deadline) and records the
hook as ``unknown``: it may have arrived, so no worker sends it again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from batchq.settings import Settings
from batchq.store.batches import BatchStore
from tests.helpers import finished_batch
from tests.procs import Workers, env_for
from tests.receivers import raw_receiver, trickled_head

pytestmark = pytest.mark.e2e

GRACE = 2
# Far past the grace and the bound below: a worker that waited for the POST would fail.
NOTIFY_TIMEOUT = 600


async def test_sigterm_during_a_trickled_post_exits_within_the_grace(
    store: BatchStore, settings: Settings, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    # One byte every half second for 150 s: the POST never ends by itself within the test.
    async with raw_receiver(trickled_head(0.5, 300)) as rec:
        bid = await finished_batch(store, settings, rec.url)
        env = env_for(
            redis_url,
            prefix,
            tmp_path / "home",
            "http://127.0.0.1:9",
            BATCHQ_SHUTDOWN_GRACE=str(GRACE),
            BATCHQ_NOTIFY_TIMEOUT=str(NOTIFY_TIMEOUT),
        )
        with Workers(env, tmp_path) as workers:
            proc = workers.start("--concurrency", "1")
            await asyncio.wait_for(rec.arrived.wait(), 120)
            assert (await store.status(bid)).notify == "sending"
            proc.send_signal(signal.SIGTERM)
            try:
                # Generous for a loaded machine, yet a small part of the POST's deadline.
                code = await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                pytest.fail("the worker outlived its grace on a trickling hook:\n" + workers.logs())
            assert code == 0, workers.logs()
        assert rec.sent < 300  # cut off mid-trickle
    assert (await store.status(bid)).notify == "unknown", workers.logs()
    meta = store.keys.batch(bid).meta
    assert await store.redis.hget(meta, "hook_error") == b"the worker stopped mid-POST"  # type: ignore[misc]
    assert "cut short by the worker's stop" in workers.logs()
