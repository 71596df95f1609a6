"""Helpers the tests share: items and batches made the way the tests need them, a worker's
steps without Ollama, an in-process worker and the simulator, status and worker records.
Test modules import helpers from here, never from one another.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from batchq import clock
from batchq.errors import InputError
from batchq.inputs.native import iter_items
from batchq.options import SubmitOptions
from batchq.records import BatchState, BatchStatus, Endpoint, Item, ItemError, ItemStatus
from batchq.settings import Settings
from batchq.sim.process import SimConfig, SimServer, running_sim
from batchq.store.batches import BatchStore
from batchq.store.codec import encode_result
from batchq.store.dispatch import Dispatcher
from batchq.store.keys import (
    ARQ_JOB_PREFIX,
    Keys,
    parse_job_id,
)
from batchq.store.presence import WorkerInfo
from tests.procs import env_for
from tests.waits import wait_until
from workers.lifecycle import shutdown, startup_hook
from workers.state import WorkerContext


def items(n: int, model: str = "m") -> list[Item]:
    return [Item(str(i), Endpoint.GENERATE, {"model": model, "prompt": f"p{i}"}) for i in range(n)]


async def register_worker(store: BatchStore, wid: str, slots: int) -> None:
    await store.redis.zadd(store.keys.workers, {wid: clock.now_ms() + 60_000})
    await store.redis.hset(store.keys.worker_slots, wid, str(slots))  # type: ignore[misc]


async def queued_jobs(store: BatchStore) -> list[str]:
    return [j.decode() for j in await store.redis.zrange(store.keys.queue, 0, -1)]


async def complete(store: BatchStore, jid: str, status: ItemStatus = ItemStatus.SUCCEEDED) -> bool:
    """What a worker does for one job, minus Ollama: start, finish, leave arq's queue."""
    bid, idx = parse_job_id(jid)
    now = clock.now_ms()
    outcome, _ = await store.scripts.start(bid, idx, jid, now_ms=now, lease_until_ms=now + 5000)
    assert outcome == "ok"
    # The finish script also takes the job out of arq's queue and deletes its keys.
    return await store.scripts.finish(
        bid, idx, jid, status.value, encode_result(status, response=f"r{idx}"), now_ms=now
    )


def of(bid: str, jobs: list[str]) -> list[str]:
    return sorted((j for j in jobs if j.startswith(bid + ":")), key=lambda j: parse_job_id(j)[1])


async def claim(store: BatchStore, jid: str) -> None:
    """What arq does when a worker takes a job: its in-progress key."""
    await store.redis.set("arq:in-progress:" + jid, b"1", px=60_000)


def counts_add_up(s: BatchStatus) -> None:
    counts = (s.queued, s.running, s.succeeded, s.failed, s.cancelled, s.expired)
    assert sum(counts) == s.total and min(counts) >= 0, s


async def finish_all(
    store: BatchStore, settings: Settings, bid: str, failing: dict[int, ItemError]
) -> None:
    """Run the batch to its end: the items in ``failing`` fail with that error, after as many
    attempts as their index says, the others succeed."""
    d = Dispatcher(store.scripts, settings)
    for _ in range(20):
        await d.run()
        jobs = of(bid, await queued_jobs(store))
        if not jobs:
            return
        for jid in jobs:
            i = parse_job_id(jid)[1]
            now = clock.now_ms()
            _, attempt = await store.scripts.start(bid, i, jid, now_ms=now, lease_until_ms=now + 9)
            if i in failing:
                payload = encode_result(ItemStatus.FAILED, error=failing[i], attempts=attempt + i)
                await store.scripts.finish(bid, i, jid, "failed", payload, now_ms=now)
            else:
                ok = encode_result(ItemStatus.SUCCEEDED, response=f"r{i}", attempts=attempt)
                await store.scripts.finish(bid, i, jid, "succeeded", ok, now_ms=now)
            await store.redis.zrem(store.keys.queue, jid)
            await store.redis.delete(ARQ_JOB_PREFIX + jid)


def status(total: int, succeeded: int, failed: int = 0, **kw: object) -> BatchStatus:
    values: dict[str, object] = dict(
        batch_id="b_0123456789abcdef",
        name="demo",
        state=BatchState.RUNNING,
        total=total,
        queued=total - succeeded - failed,
        running=0,
        succeeded=succeeded,
        failed=failed,
        cancelled=0,
        created_at=None,
        started_at=None,
        finished_at=None,
    )
    values.update(kw)
    return BatchStatus.model_validate(values)


GEN, CHAT = Endpoint.GENERATE, Endpoint.CHAT


def as_bytes(data: bytes | str | list[Any]) -> bytes:
    """Bytes as given; a str encoded; a list as JSON lines (str entries taken verbatim)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in data).encode()


def parse(data: bytes | str | list[Any], **kwargs: Any) -> list[Item]:
    return list(iter_items(io.BytesIO(as_bytes(data)), **kwargs))


def fail(data: bytes | str | list[Any], **kwargs: Any) -> InputError:
    with pytest.raises(InputError) as info:
        parse(data, **kwargs)
    return info.value


def one(line: Any, **kwargs: Any) -> Item:
    kwargs.setdefault("default_model", "m")
    (item,) = parse([line], **kwargs)
    return item


def fail_line(line: Any, field: str | None, *, match: str = "", **kwargs: Any) -> InputError:
    """The error of a single line (line 1), checking its field and message."""
    kwargs.setdefault("default_model", "m")
    err = fail([line], **kwargs)
    assert (err.line, err.field) == (1, field), str(err)
    assert match in err.reason, str(err)
    return err


USER = {"role": "user", "content": "hi"}


def chat_line(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    full = {"model": "gpt", "messages": [USER], **body}
    return {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": full,
        **extra,
    }


def completion_line(body: dict[str, Any]) -> dict[str, Any]:
    full = {"model": "gpt", "prompt": "Once", **body}
    return {"custom_id": "r1", "method": "POST", "url": "/v1/completions", "body": full}


def gen(i: int, model: str = "llama3.2") -> Item:
    return Item(str(i), Endpoint.GENERATE, {"model": model, "prompt": f"prompt {i}"})


@contextlib.asynccontextmanager
async def one_prompt(
    store: BatchStore, settings: Settings, config: SimConfig, **overrides: Any
) -> AsyncIterator[tuple[SimServer, Settings, str]]:
    """The simulator running with ``config``, and a batch of one prompt (:func:`gen` 0)
    submitted: the simulator, ``settings`` pointed at it with ``overrides``, the batch's id."""
    with running_sim(config) as sim:
        settings = settings.with_overrides(ollama_host=sim.url, **overrides)
        bid, _ = await store.submit([gen(0)])
        yield sim, settings, bid


@contextlib.asynccontextmanager
async def worker_hooks(store: BatchStore, settings: Settings) -> AsyncIterator[dict[str, object]]:
    """A worker in-process without arq's loop: its context as the startup hook leaves it, shut
    down on the way out."""
    ctx: dict[str, object] = {"redis": store.redis}
    await startup_hook(settings)(ctx)
    try:
        yield ctx
    finally:
        await shutdown(ctx)


@contextlib.asynccontextmanager
async def worker_on_sim(
    store: BatchStore, settings: Settings, config: SimConfig, **overrides: Any
) -> AsyncIterator[tuple[Settings, str, dict[str, object]]]:
    """:func:`one_prompt` and a worker for it (:func:`worker_hooks`), to run its job by hand:
    the settings pointed at the simulator, the batch's id, the worker's context."""
    async with (
        one_prompt(store, settings, config, **overrides) as (_, settings, bid),
        worker_hooks(store, settings) as ctx,
    ):
        yield settings, bid, ctx


def job_context(ctx: dict[str, object], job_id: str) -> WorkerContext:
    """What arq hands the job on its first try of ``job_id``: the worker's context and the
    job's own."""
    return cast(WorkerContext, {**ctx, "job_id": job_id, "job_try": 1, "score": 0})


@contextlib.contextmanager
def sim_env(
    redis_url: str, prefix: str, home: Path, config: SimConfig, **extra: str
) -> Iterator[tuple[SimServer, dict[str, str]]]:
    """The simulator running with ``config``, and the environment of batchq processes that
    use it (:func:`tests.procs.env_for`)."""
    with running_sim(config) as sim:
        yield sim, env_for(redis_url, prefix, home, sim.url, **extra)


def jsonl_prompts(path: Path, good: int) -> Path:
    """``good`` prompts for llama3.2, then one for a model the simulator does not have: JSON
    lines at ``path``."""
    lines = [{"prompt": f"p{i}", "model": "llama3.2"} for i in range(good)]
    lines.append({"prompt": "x", "model": "no-such-model"})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def worker_info(worker_id: str, **fields: Any) -> WorkerInfo:
    """A worker's record as its heartbeat writes it; its host and pid, unless given, read from
    its id (``host:pid:tag``)."""
    host, pid, _ = worker_id.rsplit(":", 2)
    return WorkerInfo(worker_id, **{"host": host, "pid": int(pid), **fields})


async def publish_worker(store: BatchStore, info: WorkerInfo) -> None:
    """``info`` live, as its heartbeat would have written it."""
    await store.redis.zadd(store.keys.workers, {info.worker_id: clock.now_ms() + 60_000})
    await store.redis.hset(store.keys.worker_info(info.worker_id), mapping=info.to_mapping())  # type: ignore[misc]


def wait_for_workers(env: dict[str, str], n: int, timeout: float = 120) -> None:
    """Until ``n`` workers have registered: from then on, time is the batch's, not start-up's."""
    client = redis.Redis.from_url(env["BATCHQ_REDIS_URL"])
    key = Keys(env["BATCHQ_PREFIX"]).workers

    def registered() -> bool:
        return int(client.zcard(key)) >= n  # type: ignore[arg-type]

    try:
        wait_until(registered, timeout=timeout, what="workers started")
    finally:
        client.close()


async def dispatched(
    store: BatchStore, settings: Settings, *sizes: int, slots: int, worker: str = "w"
) -> tuple[Dispatcher, list[str]]:
    """Batches of ``sizes`` items submitted in that order, one live worker of ``slots`` slots,
    one dispatch run: the dispatcher, to run again, and the batches' ids."""
    d = Dispatcher(store.scripts, settings)
    bids = [(await store.submit(items(n)))[0] for n in sizes]
    await register_worker(store, worker, slots)
    await d.run()
    return d, bids


async def run_batch(
    store: BatchStore,
    settings: Settings,
    n: int,
    *,
    slots: int,
    failing: dict[int, ItemError] | None = None,
    options: SubmitOptions | None = None,
) -> str:
    """A batch of ``n`` items submitted and run to its end (see :func:`finish_all`) with one
    live worker of ``slots`` slots: its id."""
    bid, _ = await store.submit(items(n), options)
    await register_worker(store, "w", slots)
    await finish_all(store, settings, bid, failing or {})
    return bid


async def finished_batch(
    store: BatchStore, settings: Settings, url: str | None = "http://127.0.0.1:9/h"
) -> str:
    return await run_batch(store, settings, 3, slots=2, options=SubmitOptions(notify=url))


def refused_off_loopback(port: int) -> bool:
    """Whether 127.0.0.2 (a loopback address too, but not the one bound) is refused: a server
    on 0.0.0.0 would answer there, as on every other interface."""
    try:
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False
