"""The blocking twin of :class:`batchq.client.BatchClient`, method for method.

Why :class:`SyncBatchClient` runs its own event loop on a thread, rather than ``asyncio.run``
per call: ``asyncio.run`` refuses to run where a loop is already running (Jupyter, or any code
called from ``async def``), and a Redis connection belongs to the loop that opened it, so a loop
per call would also mean a connection per call. One private loop on a daemon thread serves
every call and keeps one connection pool; the calling thread just waits for each call's
result, whether or not it has a loop of its own. Iterators move results across in pages (one
hop per Redis chunk, not per result), and ``wait``'s ``on_progress`` runs in the caller's
thread.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import inspect
import queue
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Coroutine,
    Iterator,
    Sequence,
)
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar, Unpack

from batchq.client import PAGE_SIZE, BatchClient, ExportArgs, Output, ProgressCallback
from batchq.inputs.native import InputFormat
from batchq.inputs.sources import Source
from batchq.options import SubmitArgs
from batchq.records import BatchStatus, ItemInfo, ItemResult
from batchq.results.export import OnDone
from batchq.settings import Settings

__all__ = ["SyncBatchClient"]

T = TypeVar("T")


async def _pages(items: AsyncIterator[T], size: int) -> AsyncIterator[list[T]]:
    try:
        page: list[T] = []
        async for item in items:
            page.append(item)
            if len(page) == size:
                yield page
                page = []
        if page:
            yield page
    finally:
        await _close(items)


async def _next(pages: AsyncIterator[list[T]]) -> list[T] | None:
    return await anext(pages, None)


class SyncBatchClient:
    """:class:`BatchClient`, blocking: the same methods, the same arguments, plain iterators.

    Runs a private event loop on a daemon thread (see the module's docstring for why), so it
    works the same from a script, a thread, or a notebook whose loop is running. Use it as a
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis_url: str | None = None,
        prefix: str | None = None,
    ) -> None:
        self._client = BatchClient(settings, redis_url=redis_url, prefix=prefix)
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="batchq-client", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> SyncBatchClient:
        try:
            self.connect()
        except BaseException:
            self.close()  # __exit__ will not run: stop the thread here
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def settings(self) -> Settings:
        return self._client.settings

    @property
    def redis_url(self) -> str | None:
        return self._client.redis_url

    def _start(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        if self._closed or threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "this SyncBatchClient is closed"
                if self._closed
                else "a SyncBatchClient cannot be called from its own loop's thread"
            )
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = self._start(coro)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller stops the call on the loop too
            raise

    def _iterate(self, pages: AsyncIterator[list[T]]) -> Iterator[T]:
        try:
            while (page := self._run(_next(pages))) is not None:
                yield from page
        finally:
            if not self._closed and threading.current_thread() is not self._thread:
                self._run(_close(pages))

    def close(self) -> None:
        """Close the connection and stop the loop's thread."""
        if self._closed:
            return
        try:
            self._run(self._shutdown())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    async def _shutdown(self) -> None:
        await self._client.close()
        await self._loop.shutdown_asyncgens()
        await self._loop.shutdown_default_executor()

    # -- the commands, blocking -------------------------------------------------------------------

    def connect(self) -> None:
        self._run(self._client.connect())

    def submit(
        self,
        items: Source,
        *,
        model: str | None = None,
        format: InputFormat | None = None,
        **options: Unpack[SubmitArgs],
    ) -> BatchStatus:
        return self._run(self._client.submit(items, model=model, format=format, **options))

    def status(self, batch_id: str) -> BatchStatus:
        return self._run(self._client.status(batch_id))

    def list(self, limit: int = 50) -> builtins.list[BatchStatus]:
        return self._run(self._client.list(limit))

    def results(self, batch_id: str) -> Iterator[ItemResult]:
        return self._iterate(_pages(self._client.results(batch_id), PAGE_SIZE))

    def as_completed(self, batch_id: str, *, poll: float = 0.5) -> Iterator[ItemResult]:
        return self._iterate(self._client._completed_pages(batch_id, poll))

    def wait(
        self,
        batch_id: str,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        poll: float = 0.5,
        on_done: OnDone | None = None,
    ) -> BatchStatus:
        # The callbacks run here, in the caller's thread: they may print, update a widget, or
        # call this client, none of which they could do on the loop's thread.
        final = self._wait(batch_id, timeout, on_progress, poll)
        if on_done is not None:
            res = on_done(final)
            if inspect.isawaitable(res):
                self._run(_awaited(res))
        return final

    def _wait(
        self,
        batch_id: str,
        timeout: float | None,
        on_progress: ProgressCallback | None,
        poll: float,
    ) -> BatchStatus:
        if on_progress is None:
            return self._run(self._client.wait(batch_id, timeout=timeout, poll=poll))
        updates: queue.SimpleQueue[BatchStatus | None] = queue.SimpleQueue()
        future = self._start(
            self._client.wait(batch_id, timeout=timeout, poll=poll, on_progress=updates.put)
        )
        future.add_done_callback(lambda _: updates.put(None))
        try:
            while (status := updates.get()) is not None:
                on_progress(status)
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def cancel(self, batch_id: str) -> BatchStatus:
        return self._run(self._client.cancel(batch_id))

    def repair(self, batch_id: str) -> int:
        return self._run(self._client.repair(batch_id))

    def pause(self, batch_id: str) -> BatchStatus:
        return self._run(self._client.pause(batch_id))

    def resume(self, batch_id: str) -> BatchStatus:
        return self._run(self._client.resume(batch_id))

    def retry(
        self,
        batch_id: str,
        *,
        failed: bool | None = None,
        expired: bool = False,
        ids: Sequence[str] | None = None,
    ) -> int:
        return self._run(self._client.retry(batch_id, failed=failed, expired=expired, ids=ids))

    def item(self, batch_id: str, custom_id: str) -> ItemInfo:
        return self._run(self._client.item(batch_id, custom_id))

    def write_results(
        self,
        batch_id: str,
        path: Output,
        **how: Unpack[ExportArgs],
    ) -> int:
        return self._run(self._client.write_results(batch_id, path, **how))

    def export_results(
        self,
        batch_id: str,
        path: Output,
        **how: Unpack[ExportArgs],
    ) -> tuple[int, int]:
        return self._run(self._client.export_results(batch_id, path, **how))


async def _awaited(value: Awaitable[T]) -> T:
    return await value


async def _close(items: AsyncIterator[Any]) -> None:
    if isinstance(items, AsyncGenerator):
        # Already running: the call that was iterating it is being cancelled (Ctrl-C), and
        # shutdown_asyncgens closes it with the client.
        with contextlib.suppress(RuntimeError):
            await items.aclose()
