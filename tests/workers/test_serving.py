"""A worker's view of which model each of its Ollama hosts serves (workers.serving), against a
real server and the simulator's /api/ps over a real socket."""

from __future__ import annotations

import pytest

from batchq import clock
from batchq.backends.pool import HostPool
from batchq.records import Endpoint, Item
from batchq.settings import Settings
from batchq.sim.process import SimConfig, running_sim
from batchq.store.batches import BatchStore
from batchq.store.models import Serving
from tests.helpers import items
from workers.serving import HostModels


def host_models(store: BatchStore, settings: Settings, hosts: str) -> HostModels:
    s = settings.with_overrides(ollama_host=hosts)
    pool = HostPool(s, store.redis, store.keys)
    return HostModels(s, pool, Serving(store.redis, store.keys))


async def test_two_hosts_take_two_models_and_requests_follow(
    store: BatchStore, settings: Settings
) -> None:
    await store.submit(items(4, model="a"))
    await store.submit(items(4, model="b"))
    hm = host_models(store, settings, "http://127.0.0.1:9,http://127.0.0.1:10")
    try:
        assert hm.models() == [""]  # before the first ask: only the wildcards
        await hm.refresh()
        one, two = hm.hosts.hosts
        assert {one.models, two.models} == {("a",), ("b",)}
        assert hm.models() == ["a", "b"]
        assert hm.hosts.choose("a").models == ("a",)
        assert hm.hosts.choose("b").models == ("b",)
    finally:
        await hm.hosts.aclose()


async def test_asks_again_only_when_due_or_forced(
    store: BatchStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(clock, "monotonic", lambda: now[0])
    hm = host_models(store, settings, "http://127.0.0.1:9")
    try:
        await hm.refresh()
        assert hm.models() == [""]  # no work yet
        await store.submit(items(2, model="a"))
        await hm.refresh()
        assert hm.models() == [""]  # not due: asked a moment ago
        now[0] += 0.3
        await hm.refresh(force=True)
        assert hm.models() == ["a"]
    finally:
        await hm.hosts.aclose()


async def test_a_host_holding_several_models_serves_those_with_work(
    store: BatchStore, settings: Settings
) -> None:
    config = SimConfig(models=("m1", "m2", "m3"), max_loaded=0)
    with running_sim(config) as sim:
        hm = host_models(store, settings, sim.url)
        try:
            for m in ("m1", "m2"):
                reply = await hm.hosts.hosts[0].backend.send(
                    Item("0", Endpoint.GENERATE, {"model": m, "prompt": "hi"})
                )
                assert reply.text
            await hm.read_loaded()
            # As /api/ps names them; a batch may say m2 or m2:latest.
            assert set(hm.hosts.hosts[0].loaded) == {"m1:latest", "m2:latest"}
            await store.submit(items(2, model="m2"))
            await store.submit(items(2, model="m3"))
            await hm.refresh()
            # It holds m2 (no load to pay); m3 waits for it to pick again.
            assert hm.models() == ["m2"]
        finally:
            await hm.hosts.aclose()


async def test_one_model_held_is_not_several(store: BatchStore, settings: Settings) -> None:
    config = SimConfig(models=("m1", "m2"), max_loaded=0)
    with running_sim(config) as sim:
        hm = host_models(store, settings, sim.url)
        try:
            await hm.hosts.hosts[0].backend.send(
                Item("0", Endpoint.GENERATE, {"model": "m1", "prompt": "hi"})
            )
            await hm.read_loaded()
            await store.submit(items(2, model="m2"))
            await store.submit(items(2, model="m1"))
            await hm.refresh()
            assert hm.models() == ["m1"]  # the one it holds, by the batch's name for it
        finally:
            await hm.hosts.aclose()
