"""One item by its custom id: the index behind the lookup, and the item's progress as a
worker moves it along (driven through the scripts, against a real server)."""

from __future__ import annotations

import pytest

from batchq import clock
from batchq.errors import BatchNotFound, ItemNotFound
from batchq.records import Endpoint, Item, ItemError, ItemState, ItemStatus
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.codec import encode_result
from batchq.store.dispatch import Dispatcher
from batchq.store.items import find_indices, item_info
from batchq.store.keys import job_id
from tests.helpers import register_worker


def item(cid: str, i: int) -> Item:
    return Item(cid, Endpoint.GENERATE, {"model": "m", "prompt": f"p{i}"})


async def test_only_ids_other_than_the_index_are_indexed(store: BatchStore) -> None:
    # Index 7 is called "5", index 5 is called "x": lookups must not confuse them.
    cids = ["0", "1", "alpha", "3", "ünï ✓", "x", "6", "5", "08"] + [str(i) for i in range(9, 2500)]
    bid, _ = await store.submit([item(c, i) for i, c in enumerate(cids)], chunk=1000)
    ids = store.keys.batch(bid).ids
    assert await store.redis.hgetall(ids) == {  # type: ignore[misc]
        b"alpha": b"2",
        "ünï ✓".encode(): b"4",
        b"x": b"5",
        b"5": b"7",
        b"08": b"8",
    }
    assert await store.redis.ttl(ids) == -1
    got = await find_indices(store, bid, ["alpha", "5", "x", "0", "2499", "ünï ✓", "08", "6"])
    assert got == {"alpha": 2, "5": 7, "x": 5, "0": 0, "2499": 2499, "ünï ✓": 4, "08": 8, "6": 6}
    for missing in ("2", "7", "8", "2500", "-1", "nope", "", "01"):
        with pytest.raises(ItemNotFound, match=f"has no item with custom_id {missing!r}"):
            await find_indices(store, bid, [missing])
    with pytest.raises(BatchNotFound):
        await find_indices(store, "b_0123456789abcdef", ["0"])


async def test_bare_prompts_cost_no_index(store: BatchStore) -> None:
    bid, _ = await store.submit([item(str(i), i) for i in range(50)])
    assert not await store.redis.exists(store.keys.batch(bid).ids)
    assert (await item_info(store, bid, "49")).index == 49


async def test_item_follows_its_lifecycle(store: BatchStore, settings: Settings) -> None:
    bid, _ = await store.submit([item(f"id-{i}", i) for i in range(6)])
    info = await item_info(store, bid, "id-1")
    assert (info.index, info.status, info.attempts, info.errors, info.result) == (
        1,
        ItemState.QUEUED,
        0,
        [],
        None,
    )
    await register_worker(store, "w", 2)  # window 4: items 0-3
    await Dispatcher(store.scripts, settings).run()
    jid = job_id(bid, 1)
    score = int(await store.redis.zscore(store.keys.queue, jid) or 0)
    now = clock.now_ms()
    await store.scripts.start(bid, 1, jid, now_ms=now, lease_until_ms=now + 60_000)
    info = await item_info(store, bid, "id-1")
    assert (info.status, info.attempts) == (ItemState.RUNNING, 1)
    busy = ItemError(type="server_busy", message="busy", status_code=503)
    await store.control.release_failed(
        bid, 1, jid, score=score, attempt=1, error=busy, now_ms=1_700_000_000_000
    )
    info = await item_info(store, bid, "id-1")
    assert (info.status, info.attempts) == (ItemState.QUEUED, 1)
    assert [e.model_dump() for e in info.errors] == [
        {
            "attempt": 1,
            "type": "server_busy",
            "message": "busy",
            "status_code": 503,
            "at": "2023-11-14T22:13:20.000+00:00",
        }
    ]
    await store.scripts.start(bid, 1, jid, now_ms=now, lease_until_ms=now + 60_000)
    gone = ItemError(type="model_not_found", message="model 'm' not found", status_code=404)
    payload = encode_result(ItemStatus.FAILED, error=gone, attempts=2)
    await store.scripts.finish(bid, 1, jid, "failed", payload, now_ms=now)
    info = await item_info(store, bid, "id-1")
    assert (info.status, info.attempts) == (ItemState.FAILED, 2)
    assert [(e.attempt, e.type, e.at is None) for e in info.errors] == [
        (1, "server_busy", False),
        (2, "model_not_found", True),  # the final error, from the result
    ]
    assert info.result is not None and info.result.error == gone
    assert info.result.custom_id == "id-1" and info.result.model == "m"
    # In arq's window at the cancel, or never dispatched (no stored result): cancelled.
    await store.cancel(bid)
    for cid in ("id-2", "id-5"):
        info = await item_info(store, bid, cid)
        assert info.status is ItemState.CANCELLED and info.result is not None
        assert info.result.status is ItemStatus.CANCELLED and info.result.custom_id == cid
    assert not await store.redis.hexists(store.keys.batch(bid).results, "5")  # type: ignore[misc]
