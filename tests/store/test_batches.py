from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from batchq.errors import BatchNotFound, InputError
from batchq.options import SubmitOptions
from batchq.records import BatchState, Item
from batchq.store.batches import BatchStore
from batchq.store.connection import connect
from batchq.store.keys import Keys
from tests.conftest import valkey_process
from tests.helpers import items
from tests.waits import async_wait_until


async def test_submit_stores_items_and_counts(store: BatchStore) -> None:
    batch_id, total = await store.submit(items(2500), SubmitOptions(name="demo"), chunk=1000)
    assert total == 2500
    assert batch_id.startswith("b_") and len(batch_id) == 18
    s = await store.status(batch_id)
    assert s.state is BatchState.QUEUED
    assert (s.total, s.queued, s.running, s.succeeded, s.failed, s.cancelled) == (
        2500,
        2500,
        0,
        0,
        0,
        0,
    )
    assert s.name == "demo" and s.created_at and s.started_at is None
    bk = store.keys.batch(batch_id)
    assert await store.redis.hlen(bk.items) == 2500  # type: ignore[misc]
    assert await store.redis.ttl(bk.items) == -1  # committed: no staging TTL left
    raw = await store.redis.hget(bk.items, "2499")  # type: ignore[misc]
    assert Item.loads(raw).body["prompt"] == "p2499"
    assert [b.batch_id for b in await store.recent()] == [batch_id]


async def test_failed_submission_leaves_nothing(store: BatchStore) -> None:
    def bad() -> object:
        yield from items(1500)
        raise InputError("boom", line=1501, field="prompt")

    with pytest.raises(InputError, match="line 1501"):
        await store.submit(bad(), chunk=1000)  # type: ignore[arg-type]
    assert await store.recent() == []
    assert not await store.redis.exists(store.keys.ready, store.keys.ready_level(0))
    keys = [k async for k in store.redis.scan_iter(match=f"{store.keys.prefix}:*")]
    assert keys == []


async def test_empty_submission_is_an_error(store: BatchStore) -> None:
    with pytest.raises(InputError, match="no items"):
        await store.submit([])


@pytest.mark.parametrize("bad_id", ["b_nope", "x", "b_0123456789abcdef", "b_../../etc"])
async def test_unknown_or_malformed_ids(store: BatchStore, bad_id: str) -> None:
    with pytest.raises(BatchNotFound):
        await store.status(bad_id)
    with pytest.raises(BatchNotFound):
        await store.cancel(bad_id)


async def test_submit_waits_for_aof_where_the_server_can(store: BatchStore) -> None:
    info = await store.redis.info("server")
    durable = await store.wait_durable()
    aof = (await store.redis.config_get("appendonly")).get("appendonly") == "yes"
    version = tuple(int(x) for x in str(info.get("redis_version", "0")).split(".")[:2])
    # Valkey reports redis_version 7.2.4 for compatibility, and has WAITAOF.
    assert durable == (aof and version >= (7, 2))


async def test_submit_returns_once_every_replica_has_the_batch(tmp_path: Path) -> None:
    (tmp_path / "replica").mkdir()
    with (
        valkey_process(
            *("--appendonly", "yes", "--dir", str(tmp_path), "--repl-diskless-sync-delay", "0")
        ) as master,
        # Its own dir: a replica stores the master's snapshot there on the first sync.
        valkey_process(
            *("--replicaof", "127.0.0.1", str(master), "--dir", str(tmp_path / "replica"))
        ) as replica_port,
        redis_sync.Redis(port=replica_port) as replica,
    ):
        await async_wait_until(
            lambda: replica.info("replication")["master_link_status"] == "up",
            what="the replica linked",
        )
        client = connect(f"redis://127.0.0.1:{master}")
        try:
            store = BatchStore(client, Keys("repl"))
            bid, _ = await store.submit(items(3))
            # A failover right now would promote a replica that has the batch.
            assert replica.hget(store.keys.batch(bid).meta, "total") == b"3"
            pid = int(replica.info("server")["process_id"])
            os.kill(pid, signal.SIGSTOP)  # still connected, but acknowledges nothing
            try:
                async with client.client() as conn:
                    await conn.set("repl:x", 1)
                    started = time.monotonic()
                    assert not await store.wait_durable(300, client=conn)
                    assert time.monotonic() - started >= 0.3
            finally:
                os.kill(pid, signal.SIGCONT)
            async with client.client() as conn:
                await conn.set("repl:x", 2)
                assert await store.wait_durable(5000, client=conn)

            # submit's own wait is for its commit: with the replica stopped it cannot succeed
            # (a wait on a connection that wrote nothing would, at once, promising nothing).
            waits: list[bool] = []
            wait = store.wait_durable

            async def short_wait(timeout_ms: int = 5000, *, client: Redis | None = None) -> bool:
                waits.append(await wait(300, client=client))
                return waits[-1]

            store.wait_durable = short_wait  # type: ignore[method-assign]
            os.kill(pid, signal.SIGSTOP)
            try:
                await store.submit(items(2))
            finally:
                os.kill(pid, signal.SIGCONT)
            await store.submit(items(2))
            assert waits == [False, True]
        finally:
            await client.aclose()


async def test_prefixes_isolate_deployments(store: BatchStore) -> None:
    other = BatchStore(store.redis, type(store.keys)(store.keys.prefix + "x"))
    bid, _ = await store.submit(items(3))
    assert await other.recent() == []
    with pytest.raises(BatchNotFound):
        await other.status(bid)
    assert isinstance(store.redis, Redis)


async def test_metadata_is_stored_and_shown(store: BatchStore) -> None:
    meta = {"team": "nlp", "ticket": "ÅB-12", "empty": ""}
    bid, _ = await store.submit(items(2), SubmitOptions(metadata=meta))
    plain, _ = await store.submit(items(1))
    s = await store.status(bid)
    assert s.metadata == meta and list(s.metadata) == list(meta)
    assert s.model_dump(mode="json")["metadata"] == meta
    assert {b.batch_id: b.metadata for b in await store.recent()} == {bid: meta, plain: {}}


async def test_bad_metadata_stores_nothing(store: BatchStore) -> None:
    with pytest.raises(InputError, match="at most 16 pairs"):
        await store.submit(items(3), SubmitOptions(metadata={str(i): "v" for i in range(17)}))
    assert await store.recent() == []
    assert [k async for k in store.redis.scan_iter(match=f"{store.keys.prefix}:*")] == []
