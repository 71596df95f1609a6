"""Files on disk with their metadata in Redis: the size cap, and listing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchq.api.filestore import FileStore, new_file_id
from batchq.api.openai_objects import ApiError
from batchq.store.batches import BatchStore


async def pieces(n: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield b"x" * size


def files_of(store: BatchStore, root: Path, cap: int = 1000) -> FileStore:
    return FileStore(store.redis, store.keys, root, cap)


async def test_an_upload_over_the_cap_leaves_nothing(store: BatchStore, tmp_path: Path) -> None:
    files = files_of(store, tmp_path / "files")
    fid = new_file_id()
    with pytest.raises(ApiError) as err:
        await files.receive(fid, pieces(11, 100))
    assert err.value.status == 413 and err.value.code == "file_too_large"
    assert list((tmp_path / "files").iterdir()) == []
    assert await store.redis.zcard(store.keys.files) == 0
    # Exactly the cap is taken, and only listed once committed.
    assert await files.receive(fid, pieces(10, 100)) == 1000
    assert (await files.page(after=None, limit=10, descending=True, purpose=None)) == ([], False)
    meta = await files.commit(fid, filename="a.jsonl", purpose="batch", size=1000)
    assert await files.meta(fid) == meta
    assert b"".join([c async for c in files.chunks(fid, 64)]) == b"x" * 1000


async def test_pages_follow_the_cursor_and_the_purpose(store: BatchStore, tmp_path: Path) -> None:
    files = files_of(store, tmp_path)
    ids = []
    for i in range(5):
        fid = new_file_id()
        await files.receive(fid, pieces(1, 1))
        await files.commit(
            fid, filename=f"{i}", purpose="batch_output" if i % 2 else "batch", size=1
        )
        ids.append(fid)
    rows, more = await files.page(after=None, limit=2, descending=False, purpose=None)
    assert [r[0] for r in rows] == ids[:2] and more
    rows, more = await files.page(after=ids[1], limit=2, descending=False, purpose=None)
    assert [r[0] for r in rows] == ids[2:4] and more
    rows, more = await files.page(after=None, limit=5, descending=True, purpose="batch")
    assert [r[0] for r in rows] == [ids[4], ids[2], ids[0]] and not more
    with pytest.raises(ApiError):
        await files.page(after=new_file_id(), limit=2, descending=True, purpose=None)
    await files.delete(ids[0])
    assert not (tmp_path / ids[0]).exists()
    with pytest.raises(ApiError):
        await files.meta(ids[0])
