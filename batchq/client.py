"""The Python API: what the ``batchq`` commands do, as typed methods.

:class:`BatchClient` is asynchronous; :class:`SyncBatchClient` is its blocking twin, method for
method, for scripts and notebooks::

    async with BatchClient() as client:
        batch = await client.submit(["Why is the sky blue?"], model="llama3.2")
        async for result in client.as_completed(batch.batch_id):
            print(result.custom_id, result.status, result.response)

Both take the settings the commands take (``BATCHQ_*`` variables, or a :class:`Settings`) and
reach Redis the same way: the configured URL, else the embedded server. Errors are the
commands' too: :class:`InputError` naming the line and field, :class:`BatchNotFound`,
:class:`RedisUnavailable`, :class:`ConfigError`.

Why :class:`SyncBatchClient` runs its own event loop on a thread, rather than ``asyncio.run``
per call: ``asyncio.run`` refuses to run where a loop is already running (Jupyter, or any code
called from ``async def``), and a Redis connection belongs to the loop that opened it, so a loop
per call would also mean a connection per call. One private loop on a daemon thread serves
every call and keeps one connection pool; the calling thread just waits for each call's
result, whether or not it has a loop of its own. Iterators move results across in pages (one
hop per Redis chunk, not per result), and ``wait``'s ``on_progress`` runs in the caller's
thread.

New operations on a batch (pause, resume, retry, ...) are one more method on each class: the
async one calls :class:`BatchStore` inside ``self._errors()``, the sync one wraps it in
``self._run``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import IO, Any, TypeVar

from redis.exceptions import RedisError

from .batches import BatchStore
from .collect import OutputFormat, iter_results, wait_finished
from .collect import export_results as export_stream
from .completed import completed_pages
from .connection import connect, redis_errors, redis_unavailable, resolve_redis_url
from .errors import ConfigError
from .inputs import InputFormat
from .keys import Keys
from .models import BatchStatus, ItemResult
from .settings import Settings, build_settings
from .sources import Source, submit_source

__all__ = ["BatchClient", "SyncBatchClient"]

T = TypeVar("T")

ProgressCallback = Callable[[BatchStatus], object]
Output = str | os.PathLike[str] | IO[str]

_PAGE = 1000


class BatchClient:
    """Submit batches, follow them, read their results: asynchronously, on one event loop.

    ``settings`` defaults to the environment's; ``redis_url`` and ``prefix`` override it. The
    connection opens on first use (or on ``async with`` / :meth:`connect`, which also checks
    that Redis answers) and closes with :meth:`close`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis_url: str | None = None,
        prefix: str | None = None,
    ) -> None:
        self._settings = build_settings(settings, redis_url=redis_url, prefix=prefix)
        self._store: BatchStore | None = None
        self._url: str | None = None
        self._closed = False

    async def __aenter__(self) -> BatchClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        await self.close()

    async def connect(self) -> BatchStore:
        """Connect if not yet connected (starting the embedded server if that is the one
        configured), and check that Redis answers."""
        if self._closed:
            raise RuntimeError("this BatchClient is closed")
        if self._store is not None:
            return self._store
        # Starting the embedded server waits on a process: not on the event loop.
        url = await asyncio.to_thread(resolve_redis_url, self.settings)
        redis = connect(url, retries=2)
        try:
            await redis.ping()
        except (RedisError, OSError) as e:
            await redis.aclose()
            raise redis_unavailable(url, e) from None
        except BaseException:
            await redis.aclose()
            raise
        if self._store is not None:  # another task connected meanwhile
            await redis.aclose()
            return self._store
        self._store, self._url = BatchStore(redis, Keys(self.settings.prefix)), url
        return self._store

    async def close(self) -> None:
        """Close the connection; the client cannot be used afterwards."""
        self._closed = True
        store, self._store = self._store, None
        if store is not None:
            await store.redis.aclose()

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def store(self) -> BatchStore:
        """The connected :class:`BatchStore`, for what this API does not cover."""
        if self._store is None:
            raise RuntimeError("not connected: use `async with BatchClient()` or `await connect()`")
        return self._store

    @property
    def redis_url(self) -> str | None:
        """The Redis URL in use once connected (the embedded server's, if none is set)."""
        return self._url

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        with redis_errors(self._url or ""):
            yield

    # -- the commands ---------------------------------------------------------------------------

    async def submit(
        self,
        items: Source,
        *,
        model: str | None = None,
        name: str | None = None,
        format: InputFormat | None = None,
    ) -> BatchStatus:
        """Validate and queue a batch, as ``batchq submit`` does; nothing is queued if any item
        is bad (:class:`InputError` naming the line, counting from 1, and the field).

        ``items``: a path (``str`` or ``PathLike``) to a JSONL or ``.txt`` file, an open binary
        stream, or an iterable of prompts (``str``), line objects (dicts of any shape a JSONL
        line may have) and :class:`Item`\\ s, consumed lazily. ``model`` fills in items without
        one; ``name`` labels the batch (a file's name by default); ``format`` (``"jsonl"`` or
        ``"txt"``) overrides what a file's extension implies.
        """
        store = await self.connect()
        with self._errors():
            batch_id, _ = await submit_source(
                store, items, settings=self.settings, model=model, name=name, fmt=format
            )
            return await store.status(batch_id)

    async def status(self, batch_id: str) -> BatchStatus:
        """The batch's counts and state (``batchq status``); read from counters: instant."""
        store = await self.connect()
        with self._errors():
            return await store.status(batch_id)

    async def list(self, limit: int = 50) -> builtins.list[BatchStatus]:
        """Recent batches, newest first (``batchq list``)."""
        store = await self.connect()
        with self._errors():
            return await store.recent(limit=limit)

    async def results(self, batch_id: str) -> AsyncIterator[ItemResult]:
        """The results so far, in input order (``batchq results``); items not yet final are
        skipped. Call :meth:`wait` first for all of them."""
        store = await self.connect()
        with self._errors():
            async for result in iter_results(store, batch_id):
                yield result

    async def as_completed(self, batch_id: str, *, poll: float = 0.5) -> AsyncIterator[ItemResult]:
        """Every result of the batch once, as it finishes (not in input order), checking every
        ``poll`` seconds; ends when the batch is finished. Each check costs about the items in
        flight, not the batch: see :mod:`batchq.completed`."""
        async for page in self._completed_pages(batch_id, poll):
            for result in page:
                yield result

    async def _completed_pages(
        self, batch_id: str, poll: float
    ) -> AsyncIterator[builtins.list[ItemResult]]:
        store = await self.connect()
        with self._errors():
            async for page in completed_pages(store, batch_id, poll=poll, chunk=_PAGE):
                yield page

    async def wait(
        self,
        batch_id: str,
        *,
        # The same signature as SyncBatchClient.wait; asyncio.timeout() around it works too.
        timeout: float | None = None,  # noqa: ASYNC109
        on_progress: ProgressCallback | None = None,
        poll: float = 0.5,
    ) -> BatchStatus:
        """Wait until every item is final and return the final status; ``TimeoutError`` after
        ``timeout`` seconds. ``on_progress`` is called with the first status and each one that
        differs from the last (the final one included)."""
        store = await self.connect()
        with self._errors():
            return await wait_finished(
                store, batch_id, interval=poll, max_wait=timeout, on_progress=on_progress
            )

    async def cancel(self, batch_id: str) -> BatchStatus:
        """Items not yet sent become cancelled; running ones finish (``batchq cancel``)."""
        store = await self.connect()
        with self._errors():
            return await store.cancel(batch_id)

    async def repair(self, batch_id: str) -> int:
        """Queue lost items again (``batchq repair``); returns how many were found."""
        store = await self.connect()
        with self._errors():
            return await store.repair(batch_id)

    async def write_results(
        self,
        batch_id: str,
        path: Output,
        *,
        wait: bool = False,
        fmt: OutputFormat = "native",
        errors: Output | None = None,
    ) -> int:
        """Write the results so far in input order as JSONL (``batchq results -o``), to a path
        (written aside, then renamed: a reader never sees half a file) or a text stream; with
        ``wait``, once the batch is finished. ``fmt="openai"`` writes OpenAI Batch API output
        lines; ``errors`` takes the failed, cancelled and expired items instead (OpenAI's error
        file). Returns the lines written, both files together."""
        ok, failed = await self.export_results(batch_id, path, wait=wait, fmt=fmt, errors=errors)
        return ok + failed

    async def export_results(
        self,
        batch_id: str,
        path: Output,
        *,
        wait: bool = False,
        fmt: OutputFormat = "native",
        errors: Output | None = None,
    ) -> tuple[int, int]:
        """:meth:`write_results`, counted apart: (lines of succeeded items, lines of the
        others)."""
        from .runner import write_output

        store = await self.connect()
        with self._errors():
            await store.meta(batch_id)  # an unknown id: one clear error before waiting
            if wait:
                await wait_finished(store, batch_id)
            if not isinstance(path, str | os.PathLike):
                if isinstance(errors, str | os.PathLike):
                    raise TypeError("errors is a stream when the output is one")
                return await export_stream(store, batch_id, path, fmt=fmt, errors=errors)
            if errors is not None and not isinstance(errors, str | os.PathLike):
                raise TypeError("errors is a path when the output is one")
            try:
                return await write_output(
                    store,
                    batch_id,
                    os.fspath(path),
                    fmt=fmt,
                    errors=None if errors is None else os.fspath(errors),
                )
            except OSError as e:
                if e.filename is None:  # not the file: the connection
                    raise
                raise ConfigError(f"cannot write {e.filename}: {e.strerror}") from None


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
        name: str | None = None,
        format: InputFormat | None = None,
    ) -> BatchStatus:
        return self._run(self._client.submit(items, model=model, name=name, format=format))

    def status(self, batch_id: str) -> BatchStatus:
        return self._run(self._client.status(batch_id))

    def list(self, limit: int = 50) -> builtins.list[BatchStatus]:
        return self._run(self._client.list(limit))

    def results(self, batch_id: str) -> Iterator[ItemResult]:
        return self._iterate(_pages(self._client.results(batch_id), _PAGE))

    def as_completed(self, batch_id: str, *, poll: float = 0.5) -> Iterator[ItemResult]:
        return self._iterate(self._client._completed_pages(batch_id, poll))

    def wait(
        self,
        batch_id: str,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        poll: float = 0.5,
    ) -> BatchStatus:
        if on_progress is None:
            return self._run(self._client.wait(batch_id, timeout=timeout, poll=poll))
        # The callback runs here, in the caller's thread: it may print, update a widget, or
        # call this client, none of which it could do on the loop's thread.
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

    def write_results(
        self,
        batch_id: str,
        path: Output,
        *,
        wait: bool = False,
        fmt: OutputFormat = "native",
        errors: Output | None = None,
    ) -> int:
        return self._run(
            self._client.write_results(batch_id, path, wait=wait, fmt=fmt, errors=errors)
        )

    def export_results(
        self,
        batch_id: str,
        path: Output,
        *,
        wait: bool = False,
        fmt: OutputFormat = "native",
        errors: Output | None = None,
    ) -> tuple[int, int]:
        return self._run(
            self._client.export_results(batch_id, path, wait=wait, fmt=fmt, errors=errors)
        )


async def _close(items: AsyncIterator[Any]) -> None:
    if isinstance(items, AsyncGenerator):
        # Already running: the call that was iterating it is being cancelled (Ctrl-C), and
        # shutdown_asyncgens closes it with the client.
        with contextlib.suppress(RuntimeError):
            await items.aclose()
