"""Files of the OpenAI API: metadata in Redis, content on disk.

A file's content is ``BATCHQ_HOME/files/<id>``, written once and never changed; its metadata
(name, purpose, size, creation time) is the hash ``{p}:file:<id>`` and its place in the list the
ZSET ``{p}:files``. The metadata goes to Redis only once the content is complete on disk, under
its final name, so a file that is listed can be read. Every ``serve`` process that shares the
Redis prefix must share this directory too (one machine, or a shared file system).

Content arrives and leaves in chunks: an upload is written as it is read (at most
``max_bytes``), a download read as it is sent, so a file of gigabytes never sits in memory.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

from redis.asyncio import Redis

from batchq import clock
from batchq.api.openai_objects import ApiError, sort_score
from batchq.store.codec import text
from batchq.store.keys import Keys

__all__ = ["FILE_ID_RE", "FileStore", "new_file_id"]

FILE_ID_RE = re.compile(r"^file-[0-9a-f]{24}$")
MAX_FILENAME = 255
# Largest page a list answers; OpenAI's own.
MAX_LIST = 10_000


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


def not_found(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id:.100}", param="id", code="file_not_found")


def clean_filename(name: str | None) -> str:
    """The last path component of a client's file name, bounded (a name, never a path)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return base[:MAX_FILENAME] or "upload.jsonl"


class FileStore:
    def __init__(self, redis: Redis, keys: Keys, root: Path, max_bytes: int) -> None:
        self.redis = redis
        self.keys = keys
        self.root = root
        self.max_bytes = max_bytes

    def path(self, file_id: str) -> Path:
        return self.root / file_id

    def _dir(self) -> Path:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.root

    async def receive(self, file_id: str, chunks: AsyncIterator[bytes]) -> int:
        """Write ``chunks`` as the content of ``file_id`` (not yet listed); returns its size.
        Over ``max_bytes``, 413 and nothing kept."""
        final = self._dir() / file_id
        part = final.with_name(f".{file_id}.part")
        size = 0
        try:
            # Plain writes of a chunk each: to a local disk they take microseconds, less than
            # handing each one to a thread.
            with part.open("wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ApiError(
                            413,
                            f"the file is larger than this server's limit of {self.max_bytes} "
                            "bytes (BATCHQ_MAX_FILE_BYTES)",
                            param="file",
                            code="file_too_large",
                        )
                    f.write(chunk)
            part.replace(final)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return size

    @contextlib.contextmanager
    def writing(self, file_id: str) -> Iterator[IO[bytes]]:
        """A file of the server's own (a batch's output) being written; in place once the
        block ends without an error."""
        final = self._dir() / file_id
        part = final.with_name(f".{file_id}.part")
        try:
            with part.open("wb") as f:
                yield f
            part.replace(final)
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    async def commit(
        self, file_id: str, *, filename: str, purpose: str, size: int
    ) -> dict[str, str]:
        """List the file whose content is in place; returns its metadata."""
        now = clock.now_ms()
        meta = {
            "filename": filename,
            "purpose": purpose,
            "bytes": str(size),
            "created_at": str(now),
        }
        seq = await self.redis.incr(self.keys.oai_seq)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.hset(self.keys.file(file_id), mapping=meta)
            tx.zadd(self.keys.files, {file_id: sort_score(now, seq)})
            await tx.execute()
        return meta

    async def meta(self, file_id: str) -> dict[str, str]:
        if not FILE_ID_RE.match(file_id):
            raise not_found(file_id)
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.keys.file(file_id))  # type: ignore[misc]
        if not raw:
            raise not_found(file_id)
        return {text(k): text(v) for k, v in raw.items()}

    async def chunks(self, file_id: str, size: int = 1 << 16) -> AsyncIterator[bytes]:
        """The file's content, in chunks of ``size`` bytes."""
        try:
            f = self.path(file_id).open("rb")
        except FileNotFoundError:
            # Listed in Redis but not on this disk: a serve process on another machine.
            raise ApiError(
                500,
                "the file's content is not on this server's disk (BATCHQ_HOME/files must be "
                "shared by every batchq serve process)",
                type="server_error",
            ) from None
        with f:
            while chunk := f.read(size):
                yield chunk

    async def delete(self, file_id: str) -> None:
        await self.meta(file_id)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.unlink(self.keys.file(file_id))
            tx.zrem(self.keys.files, file_id)
            await tx.execute()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(file_id))

    async def page(
        self, *, after: str | None, limit: int, descending: bool, purpose: str | None
    ) -> tuple[list[tuple[str, dict[str, str]]], bool]:
        """Up to ``limit`` files after the one ``after`` names, newest first if ``descending``
        (``purpose``: only those), and whether more follow."""
        start = 0
        if after is not None:
            rank = await (
                self.redis.zrevrank(self.keys.files, after)
                if descending
                else self.redis.zrank(self.keys.files, after)
            )
            if rank is None:
                raise not_found(after)
            start = int(rank) + 1
        out: list[tuple[str, dict[str, str]]] = []
        step = max(limit + 1, 100)
        # A purpose filter may skip files: read on in steps until the page is full, at most
        # MAX_LIST files past the cursor, so one request stays bounded.
        scanned = 0
        while len(out) <= limit and scanned < MAX_LIST:
            read = self.redis.zrevrange if descending else self.redis.zrange
            ids = [text(i) for i in await read(self.keys.files, start, start + step - 1)]
            if not ids:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for fid in ids:
                    pipe.hgetall(self.keys.file(fid))
                metas = await pipe.execute()
            for fid, raw in zip(ids, metas, strict=True):
                meta = {text(k): text(v) for k, v in raw.items()}
                if meta and (purpose is None or meta.get("purpose") == purpose):
                    out.append((fid, meta))
            start += step
            scanned += step
            if len(ids) < step:
                break
        return out[:limit], len(out) > limit
