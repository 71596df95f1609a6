"""Grouping of embedding jobs (workers.embed_groups), without Redis but for the items a leader
reads (fakeredis); the whole path, with a real worker and the simulator, is in
tests/test_e2e_embed.py."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest

from batchq import clock
from batchq.backends.base import Reply
from batchq.errors import BackendError, PermanentBackendError, TransientBackendError
from batchq.records import Endpoint, Item
from batchq.settings import Settings
from batchq.store.keys import Keys, job_id
from workers.embed_groups import (
    EmbedGroups,
    Group,
    Sent,
    _send_all,
    _shares,
    group_key,
    max_jobs,
    split_reply,
)

BID = "b_0123456789abcdef"


def embed(i: int, *texts: str, **body: Any) -> Item:
    inputs = list(texts) or [f"text {i}"]
    return Item(f"c{i}", Endpoint.EMBED, {"model": "e", "input": inputs, **body})


def reply_for(item: Item) -> Reply:
    # A vector that names its text, and one token per input.
    texts = item.body["input"]
    metrics = {"total_duration": 5, "prompt_eval_count": len(texts)}
    return Reply(text="", metrics=metrics, embeddings=[f"v:{t}" for t in texts])


class FakeSend:
    """One request per call; refuses any request holding a text that starts with ``bad``."""

    def __init__(self, error: BackendError | None = None) -> None:
        self.sent: list[list[str]] = []
        self.error = error

    async def __call__(self, item: Item) -> Sent:
        texts = list(item.body["input"])
        self.sent.append(texts)
        if any(t.startswith("bad") for t in texts):
            return self.error or PermanentBackendError(
                "the input length exceeds the context length",
                kind="invalid_request",
                status_code=400,
            )
        return reply_for(item), None  # type: ignore[return-value]


def test_group_key_is_the_request_but_its_input() -> None:
    assert group_key(embed(1)) == group_key(embed(2, "x", "y"))
    assert group_key(embed(1)) != group_key(embed(1, model="other"))
    assert group_key(embed(1)) != group_key(embed(1, truncate=False))
    assert group_key(embed(1, dimensions=8)) != group_key(embed(1, dimensions=16))
    assert group_key(Item("g", Endpoint.GENERATE, {"model": "e", "prompt": "x"})) is None


def test_shares_add_up_in_proportion() -> None:
    assert _shares(10, [1, 1]) == [5, 5]
    assert _shares(10, [1, 2, 2]) == [2, 4, 4]
    assert sum(_shares(7, [3, 3, 3])) == 7
    assert _shares(0, [5, 1]) == [0, 0]


def test_split_reply_gives_each_member_its_own_vectors() -> None:
    item = embed(0, "aa", "bb", "cccc")
    parts = split_reply(reply_for(item), [["aa"], ["bb", "cccc"]])
    assert [p.embeddings for p in parts] == [["v:aa"], ["v:bb", "v:cccc"]]
    assert [p.metrics["prompt_eval_count"] for p in parts] == [1, 2]
    assert all(p.metrics["total_duration"] == 5 for p in parts)
    alone = reply_for(embed(1))
    assert split_reply(alone, [["text 1"]]) == [alone]


def members(*items: Item) -> tuple[Group, list[asyncio.Future[Sent]]]:
    group = Group(str(group_key(items[0])))
    return group, [group.add(f"j{i}", it) for i, it in enumerate(items)]


@pytest.mark.parametrize(
    "error",
    [
        PermanentBackendError("input too long", kind="invalid_request", status_code=400),
        # A reply past the body cap: the group's, until the item whose own reply is too large.
        PermanentBackendError("the reply body passed 1 MiB", kind="body_too_large"),
    ],
)
def test_a_failed_group_is_split_down_to_the_bad_item(error: BackendError) -> None:
    async def body() -> None:
        items = [embed(i) for i in range(8)]
        items[5] = embed(5, "bad input")
        items[2] = embed(2, "two", "inputs")
        group, futs = members(*items)
        send = FakeSend(error)
        await _send_all(group.members, send)
        # 8 -> 4 + 4 -> 2 + 2 -> 1 + 1: the good halves go once each.
        assert len(send.sent) == 7
        for i, (it, fut) in enumerate(zip(items, futs, strict=True)):
            got = fut.result()
            if i == 5:
                assert got is error
            else:
                assert not isinstance(got, BackendError)
                assert got[0].embeddings == [f"v:{t}" for t in it.body["input"]]

    asyncio.run(body())


@pytest.mark.parametrize(
    "error",
    [
        TransientBackendError("busy", kind="server_busy", status_code=503),
        PermanentBackendError("model 'e' not found", kind="model_not_found", status_code=404),
    ],
)
def test_failures_not_about_content_are_every_members_own(error: BackendError) -> None:
    async def body() -> None:
        group, futs = members(embed(0, "bad one"), embed(1), embed(2))
        send = FakeSend(error)
        await _send_all(group.members, send)
        assert len(send.sent) == 1
        assert [f.result() for f in futs] == [error] * 3

    asyncio.run(body())


def test_max_jobs_leaves_room_for_a_group_per_slot() -> None:
    s = Settings(concurrency=4, embed_batch=16)
    assert max_jobs(s) == s.jobs_per_worker + s.max_in_flight * 15
    one = Settings(concurrency=4, embed_batch=1)
    assert max_jobs(one) == one.jobs_per_worker


def test_a_leader_takes_waiting_jobs_of_its_kind_and_leaves_the_rest() -> None:
    async def body() -> None:
        redis = fakeredis.FakeAsyncRedis()
        keys = Keys("t")
        groups = EmbedGroups(Settings(concurrency=4, embed_batch=4), redis, keys, "w")
        items = {
            1: embed(1),
            2: Item("g", Endpoint.GENERATE, {"model": "e", "prompt": "x"}),
            3: embed(3, model="other"),
            4: embed(4, "a", "b"),
            5: embed(5),
        }
        async with redis.pipeline() as pipe:
            pipe.hset(
                keys.batch(BID).items, mapping={str(i): it.dumps() for i, it in items.items()}
            )
            await pipe.execute()
        slots = asyncio.Semaphore(1)
        assert await groups.wait_turn(slots, job_id(BID, 0)) is None  # the leader's slot
        await groups.observe(embed(0))
        assert groups.active and groups.job_limit == max_jobs(groups._settings)
        async with redis.pipeline() as pipe:
            pipe.hget(keys.worker_slots, "w")
            assert await pipe.execute() == [str(5 * 4).encode()]

        waits = {i: asyncio.create_task(groups.wait_turn(slots, job_id(BID, i))) for i in items}
        await asyncio.sleep(0)
        assert not any(t.done() for t in waits.values())

        send = FakeSend()
        freed: list[bool] = []
        lead = asyncio.create_task(
            groups.lead(job_id(BID, 0), embed(0), send, lambda: freed.append(True))
        )
        # 0 and 1, then 4's two inputs: four in all; 5 no longer fits, 2 and 3 do not share.
        rides = {}
        for i in (1, 4):
            group = await waits[i]
            assert isinstance(group, Group)
            rides[i] = asyncio.create_task(groups.ride(group, job_id(BID, i), items[i], send))
        for i, ride in rides.items():
            got = await ride
            assert not isinstance(got, BackendError)
            assert got[0].embeddings == [f"v:{t}" for t in items[i].body["input"]]
        own = await lead
        assert not isinstance(own, BackendError) and own[0].embeddings == ["v:text 0"]
        assert send.sent == [["text 0", "text 1", "a", "b"]] and freed == [True]

        # The slot the leader gave up goes to the next waiting job, as ever.
        slots.release()
        assert await waits[2] is None
        assert not any(waits[i].done() for i in (3, 5))
        for i in (3, 5):
            waits[i].cancel()
        await asyncio.gather(*(waits[i] for i in (3, 5)), return_exceptions=True)
        assert not groups._offers and not groups._peeked
        await groups.observe(items[2])
        assert not groups.active and groups.job_limit == groups._settings.jobs_per_worker
        # Not running embeddings, a job just waits for a slot: no leader can take it.
        plain = asyncio.create_task(groups.wait_turn(slots, job_id(BID, 9)))
        await asyncio.sleep(0)
        assert not plain.done() and not groups._offers
        slots.release()
        assert await plain is None
        await redis.aclose()

    asyncio.run(body())


def test_a_worker_claims_for_groups_only_while_embeddings_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(clock, "monotonic", lambda: now[0])
    settings = Settings(concurrency=4, embed_batch=8)

    async def body() -> None:
        redis = fakeredis.FakeAsyncRedis()
        groups = EmbedGroups(settings, redis, Keys("t"), "w")
        assert not groups.active and groups.job_limit == settings.jobs_per_worker
        await groups.observe(embed(1))
        assert groups.job_limit == max_jobs(settings)
        assert groups.registered_slots == settings.max_in_flight * 8
        now[0] += 1.0
        assert groups.active
        groups._in_flight = 1  # a slow request of embeddings
        now[0] += 1.5
        assert groups.active
        groups._in_flight = 0  # no embedding in a request, none begun for 2.5 s: done
        assert not groups.active and groups.job_limit == settings.jobs_per_worker
        assert groups.registered_slots == settings.max_in_flight
        await redis.aclose()

    asyncio.run(body())


def test_a_rider_that_does_not_join_does_not_hold_up_its_leader() -> None:
    async def body() -> None:
        group, _ = members(embed(0))
        group.expect("j1")
        group.expect("j2")
        ready = asyncio.create_task(group.ready())
        await asyncio.sleep(0)
        assert not ready.done()
        group.add("j1", embed(1))
        group.leave("j2")  # its item turned out cancelled, say
        await asyncio.wait_for(ready, 5)
        assert [m.jid for m in group.members] == ["j0", "j1"]
        group.closed = True
        assert group.add("j3", embed(3)).cancelled()

    asyncio.run(body())


def test_groups_follow_the_slots_the_worker_has_now() -> None:
    # Under --concurrency auto a worker's slots are its share of the shared limit, far below
    # its ceiling: it claims a group's worth for each of those, not for the ceiling.
    async def body() -> None:
        s = Settings(concurrency="auto", embed_batch=8)
        now = [3]
        groups = EmbedGroups(
            s, fakeredis.FakeAsyncRedis(), Keys("t"), "w", base_slots=lambda: now[0]
        )
        await groups.observe(embed(0))
        assert groups.active
        assert groups.job_limit == s.jobs_per_worker + 3 * 7 < max_jobs(s)
        assert groups.registered_slots == 3 * 8
        now[0] = 10_000
        assert groups.job_limit == max_jobs(s)  # never past what arq was started with

    asyncio.run(body())
