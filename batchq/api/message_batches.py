"""Anthropic Message Batches: each one a record in Redis over an ordinary batchq batch.

``create`` reads the body as it arrives (:mod:`batchq.api.message_body`), maps each request to
a batchq chat item (:mod:`batchq.inputs.anthropic`) and stores them with
:meth:`BatchStore.submit`, so the batch is one that ``batchq status``, ``results``, ``item``,
``retry``, ``pause`` and ``top`` see. The first bad request (or a custom id used twice) stops
it with nothing queued, and the 400 names the request and the field. As Anthropic's, a batch
ends 24 hours after its creation at the latest: batchq's deadline, whose unstarted requests
expire.

The record (``{p}:ant:batch:<id>``) holds what the batchq batch does not: its id, when it was
created, when it expires and when a cancel was asked. Everything else (the counts, the end) is
read from the batchq batch; results are read from it too, in input order, when asked for.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any, cast

from batchq import clock
from batchq.api.anthropic_objects import AnthropicError
from batchq.api.message_body import iter_requests
from batchq.api.openai_objects import sort_score
from batchq.errors import BatchNotFound, BatchStateError, InputError
from batchq.inputs.anthropic import anthropic_item
from batchq.inputs.fields import Bad
from batchq.options import SubmitOptions
from batchq.records import Item
from batchq.results.anthropic import AnthropicLines
from batchq.results.export import iter_final
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.codec import text

__all__ = ["MAX_LIST", "MESSAGE_BATCH_ID_RE", "AnthropicBatches"]

MESSAGE_BATCH_ID_RE = re.compile(r"^msgbatch_[0-9a-f]{24}$")
MAX_LIST = 1000
# Anthropic's: a batch that has not ended a day after its creation expires.
_WINDOW = timedelta(hours=24)


def _not_found(batch_id: str) -> AnthropicError:
    return AnthropicError(
        404, f"No message batch found with id '{batch_id:.100}'.", type="not_found_error"
    )


def _refusal(index: int | None, custom_id: str | None, e: Bad) -> AnthropicError:
    where = "the body" if index is None else f"requests[{index}]"
    if custom_id is not None:
        where += f" (custom_id {custom_id!r:.80})"
    field = f"{e.field}: " if e.field else ""
    return AnthropicError(400, f"{where}: {field}{e.message}")


def _items(requests: Iterator[Any]) -> Iterator[Item]:
    """The requests as items; a bad one raises :class:`AnthropicError` naming it."""
    seen: set[str] = set()
    try:
        for index, request in enumerate(requests):
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
            shown = custom_id if isinstance(custom_id, str) else None
            try:
                item = anthropic_item(request)
            except Bad as e:
                raise _refusal(index, shown, e) from None
            if item.custom_id in seen:
                raise _refusal(index, shown, Bad("used by an earlier request", "custom_id"))
            seen.add(item.custom_id)
            yield item
    except Bad as e:  # the body's own structure (its field names the request)
        raise _refusal(None, None, e) from None


class AnthropicBatches:
    def __init__(self, store: BatchStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.redis = store.redis
        self.keys = store.keys

    # -- creating -----------------------------------------------------------------------------

    async def create(self, read: Callable[[int], bytes]) -> dict[str, str]:
        """Store the batch the body ``read`` gives (called on a thread); returns its record."""
        s = self.settings
        batch_id = "msgbatch_" + secrets.token_hex(12)
        options = SubmitOptions(name=batch_id, deadline=_WINDOW)
        # The deadline is read from the clock once: created and expires 24 h apart exactly.
        now = cast(int, options.deadline_ms) - _WINDOW // timedelta(milliseconds=1)
        requests = iter_requests(read, max_request_bytes=s.max_line_bytes)
        try:
            bid, _ = await self.store.submit(
                _items(requests), options, chunk=s.submit_chunk, staging_ttl=s.staging_ttl
            )
        except InputError as e:  # no request at all
            raise AnthropicError(400, f"requests: {e.reason}") from None
        record = {"batch": bid, "created_at": str(now), "expires_at": str(options.deadline_ms)}
        seq = await self.redis.incr(self.keys.oai_seq)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.hset(self.keys.ant_batch(batch_id), mapping=record)
            tx.zadd(self.keys.ant_batches, {batch_id: sort_score(now, seq)})
            await tx.execute()
        return {"id": batch_id, **record}

    # -- reading ------------------------------------------------------------------------------

    async def record(self, batch_id: str) -> dict[str, str]:
        if not MESSAGE_BATCH_ID_RE.match(batch_id):
            raise _not_found(batch_id)
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.keys.ant_batch(batch_id))  # type: ignore[misc]
        if not raw:
            raise _not_found(batch_id)
        return {"id": batch_id, **{text(k): text(v) for k, v in raw.items()}}

    async def meta(self, rec: dict[str, str]) -> dict[str, str]:
        """The batchq batch's metadata; empty if it was removed by hand."""
        try:
            return await self.store.meta(rec["batch"])
        except BatchNotFound:
            return {}

    async def page(
        self, *, before: str | None, after: str | None, limit: int
    ) -> tuple[list[dict[str, str]], bool]:
        """Up to ``limit`` records, newest first: those right after ``after``, or right before
        ``before`` (newer ones), or the newest; and whether more follow in that direction."""
        key = self.keys.ant_batches
        if before is not None and after is not None:
            raise AnthropicError(400, "give before_id or after_id, not both")
        cursor = before if before is not None else after
        if cursor is None:
            start, stop = 0, limit
        else:
            rank = await self.redis.zrevrank(key, cursor)
            if rank is None:
                raise _not_found(cursor)
            start, stop = (max(0, rank - limit), rank) if before else (rank + 1, rank + 1 + limit)
        # One more than the page on the side the client pages towards says whether there is more.
        lo, hi = (start - 1, stop - 1) if before else (start, stop)
        if stop <= start:  # before the newest: nothing (a range to -1 would be all)
            return [], False
        ids = [text(i) for i in await self.redis.zrevrange(key, max(0, lo), hi)]
        if before:
            more = lo >= 0
            ids = ids[1:] if more else ids
        else:
            more = len(ids) > limit
            ids = ids[:limit]
        recs = []
        for batch_id in ids:
            with contextlib.suppress(AnthropicError):  # deleted meanwhile
                recs.append(await self.record(batch_id))
        return recs, more

    async def results(self, batch_id: str) -> AsyncIterator[str]:
        """The result lines of an ended batch, in input order."""
        rec = await self.record(batch_id)
        meta = await self.meta(rec)
        if meta and not meta.get("finished_at"):
            raise AnthropicError(400, f"Message batch {batch_id} has not ended yet.")
        if not meta:
            return
        lines = AnthropicLines(rec["batch"])
        async for result, item in iter_final(self.store, rec["batch"]):
            yield lines.line(result, item)

    # -- changing -----------------------------------------------------------------------------

    async def cancel(self, batch_id: str) -> dict[str, str]:
        """Cancel the batch's requests not yet sent; those at Ollama finish (``canceling``
        until they do). A batch that has ended stays as it is."""
        rec = await self.record(batch_id)
        meta = await self.meta(rec)
        if not meta or meta.get("finished_at"):
            return rec
        key = self.keys.ant_batch(batch_id)
        await self.redis.hsetnx(key, "cancel_initiated_at", str(clock.now_ms()))  # type: ignore[misc]
        with contextlib.suppress(BatchStateError):
            await self.store.cancel(rec["batch"])
        return await self.record(batch_id)

    async def delete(self, batch_id: str) -> None:
        """Forget an ended batch (its batchq batch stays, for batchq's own commands)."""
        rec = await self.record(batch_id)
        meta = await self.meta(rec)
        if meta and not meta.get("finished_at"):
            raise AnthropicError(
                400,
                f"Message batch {batch_id} is still in progress: cancel it, and delete it "
                "once it has ended.",
            )
        async with self.redis.pipeline(transaction=True) as tx:
            tx.unlink(self.keys.ant_batch(batch_id))
            tx.zrem(self.keys.ant_batches, batch_id)
            await tx.execute()
