"""A finished batch's output and error files, as OpenAI's Batch API gives them.

Succeeded items go to the output file, every other one (failed, expired, cancelled) to the
error file, each in input order, as lines of :class:`~batchq.results.openai.OpenAILines`; an
expired item's error is OpenAI's ``batch_expired``. A file with no line is not made (its id
stays null, as OpenAI's does). Written from Redis a chunk at a time into
:class:`~batchq.api.filestore.FileStore`, never held whole in memory.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import IO

from batchq.api.filestore import FileStore, new_file_id
from batchq.records import Item, ItemResult, ItemStatus
from batchq.results.export import iter_final
from batchq.results.openai import OpenAILines
from batchq.store.batches import BatchStore

__all__ = ["EXPIRED_MESSAGE", "write_outputs"]

EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
# Lines between two calls of the keep-alive (the lock that says this process is writing).
_KEEP_ALIVE_EVERY = 1000


def _line(lines: OpenAILines, result: ItemResult, item: Item | None) -> str:
    if result.status is ItemStatus.EXPIRED:
        record = lines.record(result, item)
        record["response"] = None
        record["error"] = {"code": "batch_expired", "message": EXPIRED_MESSAGE}
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    return lines.line(result, item)


async def write_outputs(
    store: BatchStore,
    files: FileStore,
    batch_id: str,
    *,
    name: str,
    created_s: int,
    keep_alive: Callable[[], Awaitable[object]],
    responses: bool = False,
) -> tuple[str | None, str | None]:
    """Write the output and error files of batchq batch ``batch_id`` (``name``: the stem of
    their file names; ``created_s``: the ``created`` of its completions; ``responses``: a
    ``/v1/responses`` batch's, whose answers are Response objects) and list them; returns
    their ids (None for a file without lines)."""
    lines = OpenAILines(batch_id, created_s, responses=responses)
    ids = (new_file_id(), new_file_id())
    counts = [0, 0]
    sizes = [0, 0]
    with files.writing(ids[0]) as out, files.writing(ids[1]) as err:
        sinks: tuple[IO[bytes], IO[bytes]] = (out, err)
        n = 0
        async for result, item in iter_final(store, batch_id):
            which = 0 if result.status is ItemStatus.SUCCEEDED else 1
            data = (_line(lines, result, item) + "\n").encode()
            sinks[which].write(data)
            counts[which] += 1
            sizes[which] += len(data)
            n += 1
            if n % _KEEP_ALIVE_EVERY == 0:
                await keep_alive()
    found: list[str | None] = []
    for which, suffix in enumerate(("output", "error")):
        if counts[which]:
            await files.commit(
                ids[which],
                filename=f"{name}_{suffix}.jsonl",
                purpose="batch_output",
                size=sizes[which],
            )
            found.append(ids[which])
        else:
            files.path(ids[which]).unlink(missing_ok=True)
            found.append(None)
    return found[0], found[1]
