"""OpenAI API batches: each one a record in Redis over an ordinary batchq batch.

``create`` checks the input file line by line with batchq's own reader (OpenAI batch lines,
each for the batch's endpoint) while :meth:`BatchStore.submit` stores it, so the batch is one
that ``batchq status``, ``results``, ``retry``, ``pause`` and ``top`` see. A bad line leaves
nothing queued and the batch ``failed``, with the line in ``errors.data``. The request answers
once the file is checked and stored (``in_progress``) or refused (``failed``); a record is
``validating`` meanwhile, and stays so if its ``serve`` process dies in between.

The record (``{p}:oai:batch:<id>``) holds what the batchq batch does not: the input file, the
endpoint, the completion window (the batch's deadline), the times of OpenAI's states, and the
output and error files. The status is read from both: the batchq batch's state, and whether
its files are written. When a batch is finished, the first read of it starts writing them
(:mod:`batchq.api.outputs`) in a task of that ``serve`` process, under a lock that expires if
the process dies (another read then starts over): ``finalizing`` until they are listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import Iterator
from typing import IO, Any, BinaryIO, cast

from batchq import clock
from batchq.api import webhooks
from batchq.api.filestore import FileStore
from batchq.api.openai_objects import BATCH_ENDPOINTS, ApiError, parse_window, sort_score
from batchq.api.outputs import write_outputs
from batchq.errors import BatchNotFound, BatchStateError, InputError
from batchq.inputs.native import iter_items
from batchq.inputs.responses import RESPONSES_URL
from batchq.options import SubmitOptions
from batchq.records import Item
from batchq.settings import Settings
from batchq.store.batches import BatchStore
from batchq.store.codec import text

__all__ = ["BATCH_ID_RE", "OpenAIBatches", "not_found"]

BATCH_ID_RE = re.compile(r"^batch_[0-9a-f]{24}$")
MAX_LIST = 100
# How long a finalizing process's lock outlives its last sign of life.
_LOCK_MS = 60_000


def not_found(batch_id: str) -> ApiError:
    return ApiError(404, f"No batch found with id '{batch_id:.100}'.", param="batch_id")


class _Lines:
    """A binary stream that counts the lines read from it, blank ones too: the line number of
    the item the reader yields next."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.line = 0

    def readline(self, size: int = -1) -> bytes:
        raw = self._stream.readline(size)
        if raw:
            self.line += 1
        return raw


def _for_endpoint(items: Iterator[Item], lines: _Lines, url: str) -> Iterator[Item]:
    # The url of a line that does not name its own (the first one of its endpoint's):
    # /v1/responses lines are chat underneath, and say so.
    plain = {e: u for u, e in reversed(BATCH_ENDPOINTS.items())}
    for item in items:
        if (item.url or plain[item.endpoint]) != url:
            shown = item.url or plain[item.endpoint]
            raise InputError(
                f"the line is for {shown}, the batch for {url}", line=lines.line, field="url"
            )
        yield item


class OpenAIBatches:
    def __init__(self, store: BatchStore, files: FileStore, settings: Settings) -> None:
        self.store = store
        self.files = files
        self.settings = settings
        self.redis = store.redis
        self.keys = store.keys
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Stop the output writers of this process (their locks expire; others take over)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- creating -----------------------------------------------------------------------------

    async def create(self, body: dict[str, Any]) -> dict[str, str]:
        """Check the request, store the batch; returns its record."""
        url = body.get("endpoint")
        if url not in BATCH_ENDPOINTS:
            raise ApiError(
                400,
                f"endpoint must be one of {', '.join(BATCH_ENDPOINTS)}, got {url!r:.80}",
                param="endpoint",
                code="invalid_value",
            )
        window = parse_window(body.get("completion_window"))
        input_file_id = body.get("input_file_id")
        if not isinstance(input_file_id, str):
            raise ApiError(400, "input_file_id is required", param="input_file_id")
        meta = await self.files.meta(input_file_id)
        if meta.get("purpose") != "batch":
            raise ApiError(400, "the input file's purpose must be batch", param="input_file_id")
        metadata = body.get("metadata") or None
        try:
            options = SubmitOptions(
                name=meta.get("filename") or None, metadata=metadata, deadline=window
            )
        except InputError as e:
            param = "completion_window" if e.field == "deadline" else "metadata"
            raise ApiError(400, f"{param}: {e.reason}", param=param) from None
        batch_id = "batch_" + secrets.token_hex(12)
        now = clock.now_ms()
        record = {
            "input_file_id": input_file_id,
            "endpoint": cast(str, url),
            "completion_window": window,
            # None when not given, as OpenAI's Batch object has it.
            "metadata": json.dumps(dict(options.metadata), ensure_ascii=False)
            if options.metadata
            else "",
            "created_at": str(now),
            "expires_at": str(options.deadline_ms),
        }
        if self.settings.openai_webhook_url:
            # Fixed at creation: where this batch's events go (batchq.api.webhooks).
            record["webhook"] = self.settings.openai_webhook_url
        seq = await self.redis.incr(self.keys.oai_seq)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.hset(self.keys.oai_batch(batch_id), mapping=record)
            tx.zadd(self.keys.oai_batches, {batch_id: sort_score(now, seq)})
            await tx.execute()
        try:
            record |= await self._submit(input_file_id, cast(str, url), options)
        except Exception as e:
            # Failed, not validating for ever; the client gets the error too.
            error = {"code": "server_error", "message": str(e)[:500], "line": None}
            errors = json.dumps({"object": "list", "data": [error]})
            failed = {"failed_at": str(clock.now_ms()), "errors": errors}
            with contextlib.suppress(Exception):
                await self.redis.hset(self.keys.oai_batch(batch_id), mapping=failed)  # type: ignore[misc]
                await self._watch(batch_id, record | failed)
            raise
        await self.redis.hset(self.keys.oai_batch(batch_id), mapping=record)  # type: ignore[misc]
        await self._watch(batch_id, record)
        return {"id": batch_id, **record}

    async def _watch(self, batch_id: str, record: dict[str, str]) -> None:
        """Have a batch with a webhook announced when it finishes (batchq.api.webhooks)."""
        url = record.get("webhook")
        if not url:
            return
        if record.get("failed_at"):
            await webhooks.announce_failed(self.redis, self.keys, batch_id, url)
        else:
            await self.redis.zadd(self.keys.oai_open, {batch_id: int(record["created_at"])})

    async def _submit(self, file_id: str, url: str, options: SubmitOptions) -> dict[str, str]:
        s = self.settings
        try:
            with self.files.path(file_id).open("rb") as f:
                lines = _Lines(f)
                items = iter_items(
                    cast(BinaryIO, lines), fmt="jsonl", max_line_bytes=s.max_line_bytes
                )
                bid, _ = await self.store.submit(
                    _for_endpoint(items, lines, url),
                    options,
                    chunk=s.submit_chunk,
                    staging_ttl=s.staging_ttl,
                )
        except InputError as e:
            error = {"code": "invalid_request", "message": e.reason, "param": e.field}
            errors = {"object": "list", "data": [error | {"line": e.line}]}
            return {"failed_at": str(clock.now_ms()), "errors": json.dumps(errors)}
        except FileNotFoundError:
            raise ApiError(
                500,
                "the input file's content is not on this server's disk",
                type="server_error",
            ) from None
        return {"batch": bid, "in_progress_at": str(clock.now_ms())}

    # -- reading ------------------------------------------------------------------------------

    async def record(self, batch_id: str) -> dict[str, str]:
        if not BATCH_ID_RE.match(batch_id):
            raise not_found(batch_id)
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.keys.oai_batch(batch_id))  # type: ignore[misc]
        if not raw:
            raise not_found(batch_id)
        return {"id": batch_id, **{text(k): text(v) for k, v in raw.items()}}

    async def state(self, rec: dict[str, str]) -> dict[str, str]:
        """The batchq batch's metadata (empty before it is stored, or if it was removed);
        starts writing the output files of a finished one."""
        if not rec.get("batch"):
            return {}
        try:
            meta = await self.store.meta(rec["batch"])
        except BatchNotFound:  # removed by hand
            return {}
        # "final" names the finish its files are of: a batch run again (batchq retry) and
        # finished again gets new ones.
        if meta.get("finished_at") and rec.get("final") != meta["finished_at"]:
            await self._finalize(rec, meta)
        return meta

    async def page(self, after: str | None, limit: int) -> tuple[list[dict[str, str]], bool]:
        start = 0
        if after is not None:
            rank = await self.redis.zrevrank(self.keys.oai_batches, after)
            if rank is None:
                raise not_found(after)
            start = int(rank) + 1
        ids = await self.redis.zrevrange(self.keys.oai_batches, start, start + limit)
        recs = []
        for raw in ids[:limit]:
            with contextlib.suppress(ApiError):  # deleted meanwhile
                recs.append(await self.record(text(raw)))
        return recs, len(ids) > limit

    # -- cancelling ---------------------------------------------------------------------------

    async def cancel(self, batch_id: str) -> dict[str, str]:
        rec = await self.record(batch_id)
        if rec.get("failed_at") or not rec.get("batch"):
            raise ApiError(
                409, "only a batch that is in progress can be cancelled", param="batch_id"
            )
        meta = await self.store.meta(rec["batch"])
        if meta["state"] in ("completed", "expired"):
            raise ApiError(409, f"the batch is already {meta['state']}: it cannot be cancelled")
        if not rec.get("cancelling_at"):
            await self.redis.hsetnx(
                self.keys.oai_batch(batch_id), "cancelling_at", str(clock.now_ms())
            )  # type: ignore[misc]
        with contextlib.suppress(BatchStateError):
            await self.store.cancel(rec["batch"])
        return await self.record(batch_id)

    # -- finishing ----------------------------------------------------------------------------

    async def _finalize(self, rec: dict[str, str], meta: dict[str, str]) -> None:
        lock = self.keys.oai_finalizing(rec["id"])
        token = secrets.token_hex(8)
        if not await self.redis.set(lock, token, nx=True, px=_LOCK_MS):
            return  # another process (or task) is writing them
        key = self.keys.oai_batch(rec["id"])
        if text(await self.redis.hget(key, "final") or b"") == meta["finished_at"]:  # type: ignore[misc]
            # Written by another process between our read and the lock.
            await self.redis.unlink(lock)
            return
        rec["finalizing_at"] = str(clock.now_ms())
        await self.redis.hset(key, "finalizing_at", rec["finalizing_at"])  # type: ignore[misc]
        task = asyncio.create_task(self._write(rec, meta, lock, token))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(
        self, rec: dict[str, str], meta: dict[str, str], lock: str, token: str
    ) -> None:
        batch_id, bid = rec["id"], rec["batch"]
        try:
            started = int(meta.get("started_at") or meta.get("created_at") or 0) // 1000
            output, error = await write_outputs(
                self.store,
                self.files,
                bid,
                name=batch_id,
                created_s=started,
                keep_alive=lambda: self.redis.pexpire(lock, _LOCK_MS),
                responses=rec.get("endpoint") == RESPONSES_URL,
            )
            done = {"final": meta["finished_at"], "completed_at": str(clock.now_ms())}
            key = self.keys.oai_batch(batch_id)
            async with self.redis.pipeline(transaction=True) as tx:
                tx.hset(key, mapping=done)
                for name, value in (("output_file_id", output), ("error_file_id", error)):
                    if value:
                        tx.hset(key, name, value)
                    else:
                        tx.hdel(key, name)
                if rec.get("webhook"):
                    webhooks.announce(tx, self.keys, batch_id, bid, rec["webhook"])
                await tx.execute()
        finally:
            with contextlib.suppress(Exception):
                # Only our own: after a stall past its expiry, the lock may be another's.
                if text(await self.redis.get(lock) or b"") == token:
                    await self.redis.unlink(lock)
