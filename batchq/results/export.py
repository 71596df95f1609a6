"""Results of a batch, one per item, in input order, streamed in chunks (never loaded whole).

A stored result is compact (``{"s", "r", "e", "a", "m", "v"}``, see :func:`encode_result`);
the custom id and model come from the item itself, so they are not stored twice, and embedding
vectors are base64 float32 (see :mod:`batchq.vectors`). A long response is stored compressed:
a JSON head with the status and attempts, a newline, then the rest of the JSON, zlib-deflated
(a compact JSON text never holds a raw newline, so the first one ends the head).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, Any, Literal

from batchq import clock
from batchq.records import (
    TERMINAL_BATCH_STATES,
    BatchStatus,
    Item,
    ItemError,
    ItemResult,
    ItemStatus,
)
from batchq.results.openai import OpenAILines
from batchq.store.batches import BatchStore
from batchq.vectors import unpack, vectors_json

__all__ = [
    "OnDone",
    "OutputFormat",
    "decode_result",
    "encode_result",
    "export_results",
    "iter_final",
    "iter_results",
    "wait_finished",
    "write_results",
]

OutputFormat = Literal["native", "openai"]

# Responses longer than this (characters) are stored deflated: model output shrinks to about
# half or less, and even random text (no model writes it) to three quarters.
COMPRESS_OVER = 512


def encode_result(
    status: ItemStatus,
    *,
    response: str | None = None,
    error: ItemError | None = None,
    attempts: int = 0,
    metrics: dict[str, Any] | None = None,
    embeddings: list[str] | None = None,
) -> str | bytes:
    """The stored form of a result. ``embeddings`` are vectors already packed by
    :func:`batchq.vectors.pack`; an embeddings result has no text, so ``response`` is then
    not stored. Long responses come back deflated, as bytes (see the module's docstring)."""
    head: dict[str, Any] = {"s": status.value, "a": attempts}
    rest: dict[str, Any] = {}
    if embeddings is not None:
        rest["v"] = embeddings
    elif response is not None:
        rest["r"] = response
    if error is not None:
        rest["e"] = error.model_dump()
    if metrics:
        rest["m"] = metrics
    if response is not None and embeddings is None and len(response) > COMPRESS_OVER:
        # Level 6 (zlib's default) deflates a few KB in well under a millisecond.
        return _dumps(head).encode() + b"\n" + zlib.compress(_dumps(rest).encode(), 6)
    return _dumps(head | rest)


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


def _loads_result(raw: bytes) -> dict[str, Any]:
    cut = raw.find(b"\n")
    if cut < 0:
        d: dict[str, Any] = json.loads(raw)
        return d
    return {**json.loads(raw[:cut]), **json.loads(zlib.decompress(raw[cut + 1 :]))}


def decode_result(
    index: int, item: Item | None, raw: bytes | None, *, prior: int = 0
) -> ItemResult:
    """A stored result as an output line; no stored result means cancelled before dispatch.
    ``prior``: attempts of the item's earlier runs, which the stored result does not count."""
    d: dict[str, Any] = _loads_result(raw) if raw else {"s": ItemStatus.CANCELLED.value}
    return ItemResult(
        index=index,
        custom_id=item.custom_id if item else str(index),
        status=ItemStatus(d["s"]),
        response=d.get("r"),
        error=ItemError(**d["e"]) if d.get("e") else None,
        attempts=d.get("a", 0) + prior,
        model=item.model if item else None,
        metrics=d.get("m"),
        embeddings=[unpack(v) for v in d["v"]] if "v" in d else None,
    )


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
