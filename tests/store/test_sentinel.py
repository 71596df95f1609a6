"""Redis Sentinel: batchq and its arq workers find the master through the sentinels."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis as redis_sync
from arq.connections import ArqRedis

from batchq.settings import Settings
from batchq.store.connection import (
    SentinelURL,
    arq_pool,
    arq_redis_settings,
    connect,
    follow_master,
)
from tests.conftest import run_small_batch
from tests.sentinels import SERVICE, sentinel_group
from tests.waits import async_wait_until


def test_parse_sentinel_urls() -> None:
    s = SentinelURL.parse("redis+sentinel://:p%40ss@s1:26379,s2:26380,s3/mymaster/2")
    assert s.sentinels == [("s1", 26379), ("s2", 26380), ("s3", 26379)]
    assert (s.service, s.db, s.username, s.password) == ("mymaster", 2, None, "p@ss")
    with pytest.raises(ValueError, match="names the service"):
        SentinelURL.parse("redis+sentinel://s1:26379")
    arq = arq_redis_settings("redis+sentinel://s1:1,s2:2/svc/3")
    assert (arq.sentinel, arq.host, arq.sentinel_master, arq.database) == (
        True,
        [("s1", 1), ("s2", 2)],
        "svc",
        3,
    )


@pytest.fixture(scope="module")
def sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with sentinel_group(
        tmp_path_factory.mktemp("sentinel"), replicas=0, sentinels=1, quorum=1
    ) as g:
        yield g.url


async def test_batch_through_sentinel(sentinel_url: str, tmp_path: Path) -> None:
    assert await run_small_batch(sentinel_url, "sent", tmp_path, 5) == 5


async def test_a_client_follows_a_failover_within_seconds(tmp_path: Path) -> None:
    # The master stays dead, so a short down-after risks no second failover, and keeps the
    # whole failover well inside the client's retries (~20 s).
    with sentinel_group(tmp_path, down_after_ms=1000) as group:
        client = connect(group.url)
        try:
            await client.set("n", 1)
            group.kill(group.master_port)
            started = time.monotonic()
            # Waits out the failover inside the client's retries: no error reaches us.
            assert await client.incr("n") == 2
            took = time.monotonic() - started
            # The client asked one sentinel; the others learn the new master from its hello
            # messages, a second or two later on a busy machine.
            promoted = {group.replica_ports[0]}
            await async_wait_until(
                lambda: group.reported_masters() == promoted,
                what=f"every sentinel reporting {promoted}",
                explain=lambda: f"; they report {group.reported_masters()}",
            )
        finally:
            await client.aclose()
    # The sentinels need ~1 s to see the master down and ~2 s to promote the replica; the
    # client then finds it within a second. Before, it knocked at the dead master for 80 s.
    # The bound is that difference, with room for a loaded machine; not a speed.
    assert took < 40, took


async def test_a_client_leaves_a_live_master_that_a_switchover_replaced(tmp_path: Path) -> None:
    with sentinel_group(tmp_path) as group:
        client = connect(group.url)
        try:
            await client.set("n", 1)
            assert not await follow_master(client)
            with redis_sync.Redis(port=group.sentinel_ports[0]) as s:
                s.sentinel_failover(SERVICE)
            new = group.replica_ports[0]
            await async_wait_until(lambda: group.reported_masters() == {new}, what="the switchover")
            # The old master is still up and still takes writes (Sentinel demotes it up to
            # 10 s later, and it then drops them): the client's connections lead there, the
            # idle one and one in use.
            assert (await client.info("server"))["tcp_port"] == group.master_port
            in_use = asyncio.ensure_future(cast(Awaitable[Any], client.blpop(["wake"], timeout=60)))
            with redis_sync.Redis(port=group.master_port) as old:
                await async_wait_until(
                    lambda: old.info("clients")["blocked_clients"] == 1,
                    what="the BLPOP waiting at the old master",
                )
                assert await follow_master(client)
                old.rpush("wake", 1)
            assert await in_use == (b"wake", b"1")
            ports = await asyncio.gather(client.info("server"), client.info("server"))
            assert [p["tcp_port"] for p in ports] == [group.replica_ports[0]] * 2
            assert await client.incr("n") == 2
        finally:
            await client.aclose()


def test_arq_workers_are_given_the_retrying_sentinel_client(tmp_path: Path) -> None:
    from workers.settings import json_dumps, worker_kwargs

    url = "redis+sentinel://h:1/svc"
    assert arq_pool("redis://h:6379/0", queue_name="q", serializer=None, deserializer=None) is None
    # arq's own Sentinel client has no retries: its worker died on the first disconnect.
    kw = worker_kwargs(Settings(redis_url=url, prefix="p", home=tmp_path), url)
    pool = cast(ArqRedis, kw["redis_pool"])
    assert type(pool) is type(connect(url))
    assert (pool.default_queue_name, pool.job_serializer) == (kw["queue_name"], json_dumps)
