"""Results of a batch, one per item, in input order, streamed in chunks (never loaded whole),
as batchq's own lines or OpenAI's; and waiting for a batch to finish. How a result is stored
is :mod:`batchq.store.codec`'s."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Literal

from batchq import clock
from batchq.records import (
    TERMINAL_BATCH_STATES,
    BatchStatus,
    Item,
    ItemResult,
    ItemStatus,
)
from batchq.results.openai import OpenAILines
from batchq.store.batches import BatchStore
from batchq.store.codec import decode_result
from batchq.vectors import vectors_json

__all__ = [
    "OnDone",
    "OutputFormat",
    "export_results",
    "iter_final",
    "iter_results",
    "wait_finished",
    "write_output",
    "write_results",
]

OutputFormat = Literal["native", "openai"]


async def iter_results(
    store: BatchStore, batch_id: str, *, chunk: int = 1000
) -> AsyncIterator[ItemResult]:
    """Final results so far, in index order; items still pending are skipped."""
    async for result, _ in iter_final(store, batch_id, chunk=chunk):
        yield result


async def iter_final(
    store: BatchStore, batch_id: str, *, chunk: int = 1000
) -> AsyncIterator[tuple[ItemResult, Item | None]]:
    """Like :func:`iter_results`, with each result's item (None if it is missing), for output
    formats that depend on what was asked (the endpoint)."""
    meta = await store.meta(batch_id)
    total = int(meta["total"])
    cancel_from = int(meta.get("cancel_from", -1))
    # Attempts of earlier runs exist only once an item was retried.
    rerun = bool(meta.get("rerun"))
    bk = store.keys.batch(batch_id)
    for start in range(0, total, chunk):
        fields = [str(i) for i in range(start, min(start + chunk, total))]
        async with store.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(bk.items, fields)
            pipe.hmget(bk.results, fields)
            if rerun:
                pipe.hmget(bk.prior, fields)
            items, results, *rest = await pipe.execute()
        prior = rest[0] if rest else [None] * len(fields)
        for offset, (raw_item, raw_result) in enumerate(zip(items, results, strict=True)):
            index = start + offset
            item = Item.loads(raw_item) if raw_item else None
            if raw_result is not None:
                yield decode_result(index, item, raw_result, prior=int(prior[offset] or 0)), item
            elif 0 <= cancel_from <= index:
                # Cancelled before dispatch: no result was written for these, by design (a
                # cancel of a million-item batch stays O(window)).
                yield decode_result(index, item, None), item


OnDone = Callable[[BatchStatus], Awaitable[None] | None]


async def wait_finished(
    store: BatchStore,
    batch_id: str,
    *,
    interval: float = 0.5,
    max_wait: float | None = None,
    on_progress: Callable[[BatchStatus], object] | None = None,
    on_done: OnDone | None = None,
) -> BatchStatus:
    """Wait until the batch is final and return its status, after calling ``on_done`` with
    it (a function or a coroutine function), if given: a completion callback for scripts.
    ``on_progress`` sees the first status and every one that differs from the last it saw
    (so the final one too).

    ``TimeoutError`` after ``max_wait`` seconds (the callback is not called then). To follow
    several batches, run one ``wait_finished`` task per batch.
    """
    deadline = None if max_wait is None else clock.monotonic() + max_wait
    seen: BatchStatus | None = None
    while True:
        status = await store.status(batch_id)
        if on_progress is not None and status != seen:
            seen = status
            on_progress(status)
        if status.state in TERMINAL_BATCH_STATES and status.finished_at:
            if on_done is not None:
                res = on_done(status)
                if inspect.isawaitable(res):
                    await res
            return status
        delay = interval
        if deadline is not None:
            left = deadline - clock.monotonic()
            if left <= 0:
                raise TimeoutError(f"batch {batch_id} did not finish within {max_wait} s")
            delay = min(interval, left)
        await asyncio.sleep(delay)


async def write_results(store: BatchStore, batch_id: str, out: IO[str]) -> int:
    """Every final result so far, one native JSON line each; returns how many."""
    ok, failed = await export_results(store, batch_id, out)
    return ok + failed


def _native_line(result: ItemResult) -> str:
    if result.embeddings is None:
        return result.model_dump_json()
    # Vectors are most of the line: written with float32's digits, not float64's repr.
    head = result.model_dump_json(exclude={"embeddings"})
    return f'{head[:-1]},"embeddings":{vectors_json(result.embeddings)}}}'


async def export_results(
    store: BatchStore,
    batch_id: str,
    out: IO[str],
    *,
    fmt: OutputFormat = "native",
    errors: IO[str] | None = None,
) -> tuple[int, int]:
    """Write the final results so far in ``fmt``, streamed. With ``errors``, failed and
    cancelled items go there instead of to ``out`` (like OpenAI's separate error file).
    Returns (lines of succeeded items, lines of the others)."""
    openai: OpenAILines | None = None
    if fmt == "openai":
        meta = await store.meta(batch_id)
        started_ms = meta.get("started_at") or meta.get("created_at") or "0"
        openai = OpenAILines(batch_id, int(started_ms) // 1000)
    elif fmt != "native":
        raise ValueError(f"unknown output format {fmt!r}")
    ok = failed = 0
    async for result, item in iter_final(store, batch_id):
        line = openai.line(result, item) if openai else _native_line(result)
        if result.status is not ItemStatus.SUCCEEDED:
            failed += 1
            target = errors or out
        else:
            ok += 1
            target = out
        target.write(line)
        target.write("\n")
    return ok, failed


async def write_output(
    store: BatchStore,
    batch_id: str,
    output: str,
    *,
    fmt: OutputFormat = "native",
    errors: str | None = None,
) -> tuple[int, int]:
    """Write the results to ``output`` (``-``: stdout), and failed and cancelled items to
    ``errors`` if given; returns (lines of succeeded items, lines of the others)."""
    # A reader never sees a half-written file: each is written aside, then renamed.
    # Plain blocking writes: this is the CLI's only task, nothing else waits on the loop.
    with ExitStack() as files:
        out: IO[str] = sys.stdout
        err: IO[str] | None = None
        if output != "-":
            out = files.enter_context(open(output + ".part", "w", encoding="utf-8"))  # noqa: ASYNC230
        if errors is not None:
            err = files.enter_context(open(errors + ".part", "w", encoding="utf-8"))  # noqa: ASYNC230
        counts = await export_results(store, batch_id, out, fmt=fmt, errors=err)
    for path in (output, errors):
        if path is not None and path != "-":
            Path(path + ".part").replace(path)  # noqa: ASYNC240
    return counts
