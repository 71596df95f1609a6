"""A submission's staged items: their TTL renewed by every chunk, and a submission whose first
chunks expired refused, with nothing committed and nothing left behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from batchq.errors import SubmissionIncomplete
from batchq.records import Item
from batchq.store.batches import BatchStore
from batchq.store.staging import STAGING_TTL_S, Staging
from tests.helpers import items
from tests.waits import wait_until


async def keys_of(store: BatchStore) -> list[bytes]:
    return [k async for k in store.redis.scan_iter(match=f"{store.keys.prefix}:*")]


def chunk(start: int, n: int, *, ids: bool = False) -> tuple[dict[str, str], dict[str, int]]:
    batch = {str(i): f'{{"n":{i}}}' for i in range(start, start + n)}
    return batch, ({f"id-{i}": i for i in range(start, start + n)} if ids else {})


async def test_staged_items_expire_if_the_submitter_dies(store: BatchStore) -> None:
    staging = Staging(store.redis, store.keys.batch("b_" + "0" * 16), STAGING_TTL_S)
    await staging.add(*chunk(0, 3, ids=True))
    for key in (staging.bk.items, staging.bk.ids):
        assert 0 < await store.redis.ttl(key) <= STAGING_TTL_S
    await staging.discard()
    assert await keys_of(store) == []


async def test_every_chunk_renews_the_ttl_of_both_keys(store: BatchStore) -> None:
    staging = Staging(store.redis, store.keys.batch("b_" + "1" * 16), 60)
    await staging.add(*chunk(0, 3, ids=True))
    # As if most of the TTL had gone by since: the next chunk, without custom ids, renews
    # both keys, so that they expire together.
    for key in (staging.bk.items, staging.bk.ids):
        await store.redis.pexpire(key, 2000)
    await staging.add(*chunk(3, 3))
    for key in (staging.bk.items, staging.bk.ids):
        assert 58_000 < await store.redis.pttl(key) <= 60_000
    await staging.check(store.redis)
    assert (staging.items, staging.ids) == (6, 3)
    await staging.discard()


async def test_a_chunk_after_the_staged_ones_expired_is_refused(
    store: BatchStore, redis_url: str
) -> None:
    staging = Staging(store.redis, store.keys.batch("b_" + "2" * 16), 0.2)
    await staging.add(*chunk(0, 3, ids=True))
    with redis.Redis.from_url(redis_url) as r:
        keys = (staging.bk.items, staging.bk.ids)
        wait_until(lambda: not r.exists(*keys), timeout=10, what="the staged chunk expired")
    with pytest.raises(SubmissionIncomplete) as e:
        await staging.add(*chunk(3, 2))
    assert (e.value.staged, e.value.total) == (2, 5)
    assert str(e.value) == (
        "submission incomplete: staged 2 of 5 items (the staging area expired: a pause in the "
        "input outlasted BATCHQ_STAGING_TTL, 0.2 s; raise it or submit faster)"
    )
    await staging.discard()


async def test_a_submission_whose_first_chunks_expired_commits_nothing(
    store: BatchStore, redis_url: str
) -> None:
    def slow() -> Iterator[Item]:
        # Runs on the submission's parser thread: a producer that pauses past the TTL.
        yield from items(4)
        with redis.Redis.from_url(redis_url) as r:
            match = f"{store.keys.prefix}:b:*:items"
            wait_until(
                lambda: [r.hlen(k) for k in r.scan_iter(match=match)] == [4],
                what="two chunks staged",
            )
            wait_until(lambda: not list(r.scan_iter(match=match)), what="they expired")
        yield from items(2)

    with pytest.raises(SubmissionIncomplete, match="staged 2 of 6 items"):
        await store.submit(slow(), chunk=2, staging_ttl=1)
    assert await store.recent() == []
    assert await keys_of(store) == []


async def test_items_that_expire_after_the_check_are_not_committed(
    store: BatchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last moment they can go: between the commit's check and its EXEC.
    check = Staging.check

    async def check_then_expire(self: Staging, client: redis.asyncio.Redis) -> None:
        await check(self, client)
        if client is not store.redis:  # the commit's own check, not the one after it
            await store.redis.delete(self.bk.items)

    monkeypatch.setattr(Staging, "check", check_then_expire)
    with pytest.raises(SubmissionIncomplete, match="staged 0 of 5 items"):
        await store.submit(items(5), chunk=2)
    assert await store.recent() == []
    assert await keys_of(store) == []
