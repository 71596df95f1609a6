"""Model-aware dispatch against a real server: which model a host is given (pick.lua), and that
dispatch and claim then keep to it (dispatch.lua, claim.lua)."""

from __future__ import annotations

import json
from collections import Counter

from batchq import clock
from batchq.options import SubmitOptions
from batchq.records import Endpoint, Item
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.dispatch import Dispatcher
from batchq.store.models import Pick, Serving
from tests.helpers import complete, items, queued_jobs, register_worker

BOUND_MS = 60_000
HOLD_MS = 15_000


def serving(store: BatchStore) -> Serving:
    return Serving(store.redis, store.keys)


async def pick(
    store: BatchStore, host: str, *, at: int | None = None, loaded: list[str] | None = None
) -> Pick:
    now = clock.now_ms() if at is None else at
    return await serving(store).pick(
        host, now_ms=now, switch_after_ms=BOUND_MS, hold_ms=HOLD_MS, loaded=loaded or []
    )


async def models_of_queue(store: BatchStore) -> Counter[str]:
    """How many queued jobs each batch's model has."""
    out: Counter[str] = Counter()
    for jid in await queued_jobs(store):
        bid = jid.rpartition(":")[0]
        out[(await store.redis.hget(store.keys.batch(bid).meta, "model") or b"").decode()] += 1  # type: ignore[misc]
    return out


async def test_a_batch_of_one_model_records_it_and_a_mixed_one_does_not(
    store: BatchStore,
) -> None:
    one, _ = await store.submit(items(3, model="a"))
    mixed, _ = await store.submit([*items(2, model="a"), *items(2, model="b")])
    assert await store.redis.hget(store.keys.batch(one).meta, "model") == b"a"  # type: ignore[misc]
    assert await store.redis.hget(store.keys.batch(mixed).meta, "model") is None  # type: ignore[misc]


async def test_a_host_keeps_its_model_while_it_has_work(store: BatchStore) -> None:
    await store.submit(items(5, model="a"))
    first = await pick(store, "h1")
    assert first.model == "a" and first.changed
    await store.submit(items(5, model="b"))
    again = await pick(store, "h1")
    assert again.model == "a" and not again.changed
    assert {w.model for w in again.work} == {"a", "b"}


async def test_a_host_moves_on_when_its_model_runs_dry(
    store: BatchStore, settings: Settings
) -> None:
    a, _ = await store.submit(items(3, model="a"))
    await store.submit(items(3, model="b"))
    assert (await pick(store, "h1")).model == "a"
    await register_worker(store, "w", 4)
    d = Dispatcher(store.scripts, settings)
    await d.run(models=["a"])
    # Dispatched, not yet taken: still a's work.
    assert (await pick(store, "h1")).model == "a"
    for jid in await queued_jobs(store):
        await complete(store, jid)
    moved = await pick(store, "h1")
    assert moved.model == "b" and moved.changed
    assert (await store.status(a)).succeeded == 3


async def test_a_model_that_waited_past_the_bound_gets_the_host(store: BatchStore) -> None:
    await store.submit(items(5, model="a"))
    now = clock.now_ms()
    assert (await pick(store, "h1", at=now)).model == "a"
    await store.submit(items(5, model="b"))
    assert (await pick(store, "h1", at=now + 1000)).model == "a"  # b is seen waiting from here
    assert (await pick(store, "h1", at=now + 1000 + BOUND_MS)).model == "a"  # not past it yet
    turned = await pick(store, "h1", at=now + 2000 + BOUND_MS)
    assert turned.model == "b" and turned.changed
    # And a, which it left with work, gets it back a bound later: both make progress.
    assert (await pick(store, "h1", at=now + 3000 + 2 * BOUND_MS)).model == "a"


async def test_higher_priority_work_takes_the_host_at_once(store: BatchStore) -> None:
    await store.submit(items(5, model="a"))
    assert (await pick(store, "h1")).model == "a"
    await store.submit(items(5, model="b"), SubmitOptions(priority=1))
    assert (await pick(store, "h1")).model == "b"


async def test_hosts_spread_over_the_models(store: BatchStore) -> None:
    for m in ("a", "b", "c"):
        await store.submit(items(5, model=m))
    got = [(await pick(store, h)).model for h in ("h1", "h2", "h3")]
    assert sorted(got) == ["a", "b", "c"]
    # A fourth host shares a model rather than idle.
    assert (await pick(store, "h4")).model in {"a", "b", "c"}


async def test_a_host_prefers_a_model_it_has_loaded(store: BatchStore) -> None:
    for m in ("a", "b", "c"):
        await store.submit(items(5, model=m))
    assert (await pick(store, "h1", loaded=["c"])).model == "c"


async def test_a_silent_host_gives_its_model_up(store: BatchStore) -> None:
    await store.submit(items(5, model="a"))
    await store.submit(items(5, model="b"))
    now = clock.now_ms()
    assert (await pick(store, "h1", at=now)).model == "a"
    assert (await pick(store, "h2", at=now)).model == "b"
    # h1 stops asking (its workers are gone): past the hold, a's work is free for another.
    later = now + HOLD_MS + 1
    assert (await pick(store, "h2", at=later)).model == "b"
    assert (await pick(store, "h3", at=later)).model == "a"


async def test_loads_are_counted_per_host(store: BatchStore, settings: Settings) -> None:
    await store.submit(items(2, model="a"))
    await store.submit(items(2, model="b"))
    assert (await pick(store, "h1")).model == "a"
    await register_worker(store, "w", 4)
    await Dispatcher(store.scripts, settings).run(models=["a"])
    for jid in await queued_jobs(store):
        await complete(store, jid)
    assert (await pick(store, "h1", loaded=["a"])).model == "b"
    served = await serving(store).served()
    assert served["h1"].model == "b" and served["h1"].loads == 2


async def test_dispatch_and_claim_keep_to_the_models_given(
    store: BatchStore, settings: Settings
) -> None:
    await store.submit(items(20, model="a"))
    await store.submit(items(20, model="b"))
    await register_worker(store, "w", 2)  # window 4
    d = Dispatcher(store.scripts, settings)
    await d.run(models=["a"])
    assert await models_of_queue(store) == {"a": 4}
    # a's window is full; b's is its own, not crowded out by a's jobs.
    await d.run(models=["b"])
    assert await models_of_queue(store) == {"a": 4, "b": 4}
    now = clock.now_ms()
    claimed = await store.scripts.claim(now_ms=now, ttl_ms=60_000, limit=100, models=["b"])
    assert len(claimed) == 4
    assert {await job_model(store, c.job_id) for c in claimed} == {"b"}
    # A worker whose hosts serve nothing yet takes only the wildcards: none here.
    assert await store.scripts.claim(now_ms=now, ttl_ms=60_000, limit=100, models=[""]) == []


async def job_model(store: BatchStore, jid: str) -> str:
    """The model a job's item names, read from the item itself."""
    bid, _, idx = jid.rpartition(":")
    raw = await store.redis.hget(store.keys.batch(bid).items, idx)  # type: ignore[misc]
    return Item.loads(raw).model


def alternating(n: int, models: tuple[str, ...] = ("a", "b", "c")) -> list[Item]:
    return [
        Item(str(i), Endpoint.GENERATE, {"model": models[i % len(models)], "prompt": f"p{i}"})
        for i in range(n)
    ]


async def drain(store: BatchStore, d: Dispatcher, model: str) -> list[int]:
    """Dispatch and complete ``model``'s items until none comes; their indices in order."""
    got: list[int] = []
    while True:
        await d.run(models=[model])
        # One call's jobs share a score: in index order, as dispatched.
        jobs = sorted(await queued_jobs(store), key=lambda j: int(j.rpartition(":")[2]))
        if not jobs:
            return got
        for jid in jobs:
            assert await job_model(store, jid) == model
            got.append(int(jid.rpartition(":")[2]))
            await complete(store, jid)


async def test_a_batch_of_several_models_is_dispatched_one_model_at_a_time(
    store: BatchStore, settings: Settings
) -> None:
    bid, _ = await store.submit(alternating(30))
    meta = await store.redis.hgetall(store.keys.batch(bid).meta)  # type: ignore[misc]
    assert b"model" not in meta and json.loads(meta[b"models"]) == ["a", "b", "c"]
    await register_worker(store, "w", 2)
    d = Dispatcher(store.scripts, settings)
    assert (await pick(store, "h1")).model in {"a", "b", "c"}
    assert await drain(store, d, "b") == list(range(1, 30, 3))
    # The cursor passed every a and c on its way: parked, each still dispatched once, in order.
    assert await drain(store, d, "a") == list(range(0, 30, 3))
    pick_c = await pick(store, "h1")
    assert pick_c.model == "c" and {w.model for w in pick_c.work} == {"c"}
    assert await drain(store, d, "c") == list(range(2, 30, 3))
    s = await store.status(bid)
    assert s.succeeded == 30 and s.state.value == "completed"


async def test_a_batch_of_several_models_without_models_given_is_in_input_order(
    store: BatchStore, settings: Settings
) -> None:
    await store.submit(alternating(9))
    await register_worker(store, "w", 4)
    await Dispatcher(store.scripts, settings).run()
    got = sorted(int(j.rpartition(":")[2]) for j in await queued_jobs(store))
    assert got == [0, 1, 2, 3, 4, 5, 6, 7]


async def test_parked_items_are_cancelled_with_their_batch(
    store: BatchStore, settings: Settings
) -> None:
    bid, _ = await store.submit(alternating(12))
    await register_worker(store, "w", 2)
    d = Dispatcher(store.scripts, settings)
    await d.run(models=["c"])  # window 4: items 2, 5, 8 and 11 sent; the others parked
    for jid in await queued_jobs(store):
        await complete(store, jid)
    await store.control.cancel(bid, now_ms=clock.now_ms())
    s = await store.status(bid)
    assert (s.succeeded, s.cancelled) == (4, 8)
    assert await store.redis.exists(f"{store.keys.batch(bid).meta}:park:0") == 0


async def test_repair_counts_parked_items_as_waiting(store: BatchStore, settings: Settings) -> None:
    bid, _ = await store.submit(alternating(12))
    await register_worker(store, "w", 2)
    await Dispatcher(store.scripts, settings).run(models=["c"])
    for jid in await queued_jobs(store):
        await complete(store, jid)
    # The a and b items are parked: owed a dispatch, not lost.
    assert await store.scripts.repair_range(bid, 0, 12, now_ms=clock.now_ms()) == 0


async def test_without_models_dispatch_is_as_before(store: BatchStore, settings: Settings) -> None:
    await store.submit(items(10, model="a"))
    await store.submit(items(10, model="b"))
    await register_worker(store, "w", 2)
    await Dispatcher(store.scripts, settings).run()
    assert sum((await models_of_queue(store)).values()) == 4


async def test_embeddings_and_generations_of_one_model_are_one_model(store: BatchStore) -> None:
    batch = [
        Item("0", Endpoint.EMBED, {"model": "e", "input": "x"}),
        Item("1", Endpoint.EMBED, {"model": "e", "input": "y"}),
    ]
    bid, _ = await store.submit(batch)
    assert await store.redis.hget(store.keys.batch(bid).meta, "model") == b"e"  # type: ignore[misc]


async def test_an_item_does_not_start_on_a_host_that_left_its_model(
    store: BatchStore, settings: Settings
) -> None:
    bid, _ = await store.submit(items(3, model="a"))
    await register_worker(store, "w", 2)
    await Dispatcher(store.scripts, settings).run(models=["a"])
    now = clock.now_ms()
    jid = f"{bid}:0"

    async def begin(said: str | None) -> str:
        if said is not None:
            await store.redis.hset(store.keys.serving, "h1", said)  # type: ignore[misc]
        outcome, _, _ = await store.scripts.begin(
            bid, 0, jid, now_ms=now, lease_until_ms=now + 5000, endpoint="h1", model="a"
        )
        return outcome

    assert await begin(f"b|{now}|2|") == "moved"
    assert await begin(f"b|{now}|2|c d") == "moved"
    # Nothing was taken: no lease, no attempt.
    assert (await store.status(bid)).running == 0
    assert await store.redis.hget(store.keys.batch(bid).tries, "0") is None  # type: ignore[misc]
    assert await begin(f"b|{now}|2|c a") == "ok"  # held with b at once: served too


async def test_an_item_starts_where_no_host_has_said_anything(store: BatchStore) -> None:
    bid, _ = await store.submit(items(1, model="a"))
    now = clock.now_ms()
    outcome, attempt, _ = await store.scripts.begin(
        bid, 0, f"{bid}:0", now_ms=now, lease_until_ms=now + 5000, endpoint="h9", model="a"
    )
    assert (outcome, attempt) == ("ok", 1)


async def test_a_host_that_holds_several_models_serves_the_others_with_work(
    store: BatchStore,
) -> None:
    for m in ("a", "b", "c"):
        await store.submit(items(2, model=m))
    got = await serving(store).pick(
        "h1",
        now_ms=clock.now_ms(),
        switch_after_ms=BOUND_MS,
        hold_ms=HOLD_MS,
        loaded=["b", "c", "z"],
        several=True,
    )
    assert got.model in {"b", "c"} and set(got.others) == {"b", "c"} - {got.model}
    served = (await serving(store).served())["h1"]
    assert (served.model, served.others, served.loads) == (got.model, got.others, 0)
